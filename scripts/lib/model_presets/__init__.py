"""Model presets by name: `MODEL=qwen2.5-0.5b` (the default), `qwen2.5-1.5b`, `qwen2.5-3b`, `qwen2.5-7b`.

One YAML file per preset, `verl_configs/models/<name>.yaml` (the folder is the list), holds what depends on the
model's size, every value with its source:

    id    the Hugging Face hub id; the default preset's is the one place the default model's id is written
    arch  the shapes the memory estimates need (RL: scripts/rl/memory.py; SFT: notebooks/sft_memory.py), from the
          model's config.json on the hub
    sft   values for the SFT notebook's size-dependent knobs (a knob left None in its parameters cell takes them)
    rl    verl overrides: scripts/rl/launch.py passes them as `++key=value` before the user's overrides

Every stage resolves a model here: the RL launcher (MODEL, BASE_MODEL), evaluation's `base` label, the SFT notebook
(`model = "qwen2.5-1.5b"`, a hub id or a folder) and the setup job's download (`python -m scripts.lib.model_presets`
prints the model MODEL and BASE_MODEL choose).

    >>> resolve("qwen2.5-7b"), resolve("/models/mine")
    ('Qwen/Qwen2.5-7B-Instruct', '/models/mine')
    >>> preset_for("Qwen/Qwen2.5-3B-Instruct").name
    'qwen2.5-3b'
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts.lib.paths import VERL_CONFIGS, display_path

PRESETS_DIR = VERL_CONFIGS / "models"
DEFAULT_PRESET = "qwen2.5-0.5b"


class PresetError(ValueError):
    """An unknown preset name, or MODEL and BASE_MODEL naming two different presets' models."""


@dataclass(frozen=True)
class Arch:
    """The shapes of a Qwen2-style decoder (GQA attention with q/k/v biases, SwiGLU MLP, RMSNorm): config.json's."""

    params: int  # all parameters, embeddings included (the model card's count)
    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    intermediate: int  # intermediate_size: the SwiGLU MLP's width
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int  # hidden_size // num_attention_heads
    vocab: int  # vocab_size: rows of the embedding and of the LM head
    tied_embeddings: bool  # tie_word_embeddings: the LM head is the input embedding

    def counted_params(self) -> int:
        """The parameter count the shapes give (`params` must agree: a typo in a shape shows up here)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q + q + 2 * (self.hidden * kv + kv) + q * self.hidden  # q/k/v with biases, o
        layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden  # + gate/up/down, two RMSNorms
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * layer + self.hidden + embeddings  # + the final RMSNorm

    def projections(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's linear projections, by their module names: (in features, out features)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        mlp_in, mlp_out = (self.hidden, self.intermediate), (self.intermediate, self.hidden)
        return {
            "q_proj": (self.hidden, q),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden),
            "gate_proj": mlp_in,
            "up_proj": mlp_in,
            "down_proj": mlp_out,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Arch:
        """The shapes a Qwen2-style config.json gives, `params` counted from them; KeyError names a missing key."""
        heads = config["num_attention_heads"]
        shapes = {
            "layers": config["num_hidden_layers"],
            "hidden": config["hidden_size"],
            "intermediate": config["intermediate_size"],
            "heads": heads,
            "kv_heads": config.get("num_key_value_heads") or heads,
            "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
            "vocab": config["vocab_size"],
            "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
        }
        return cls(params=cls(params=0, **shapes).counted_params(), **shapes)


@dataclass(frozen=True)
class Preset:
    name: str
    id: str
    arch: Arch
    sft: dict[str, Any]
    rl: dict[str, Any]

    @property
    def path(self) -> Path:
        return PRESETS_DIR / f"{self.name}.yaml"


def names() -> list[str]:
    """The presets this checkout has: one verl_configs/models/<name>.yaml each."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


@functools.cache
def preset(name: str) -> Preset:
    """The preset called `name`; a PresetError listing the presets when there is none."""
    path = PRESETS_DIR / f"{name}.yaml"
    if "/" in name or not path.is_file():
        raise PresetError(f"unknown model preset {name!r}; the presets: {', '.join(names())} (verl_configs/models/)")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Preset(name=name, id=data["id"], arch=Arch(**data["arch"]), sft=data["sft"], rl=data["rl"])


def preset_for(model: str) -> Preset | None:
    """The preset `model` names: a preset name or a preset's hub id (case-insensitive, like the hub); else None."""
    if model in names():
        return preset(model)
    return next((p for p in map(preset, names()) if p.id.lower() == model.rstrip("/").lower()), None)


def arch_of(model: str) -> tuple[Arch | None, str]:
    """(shapes, where they come from) for `model`: a preset's (by name or hub id), a folder's config.json, or a hub
    model's config.json already in the local cache; (None, why) when there is none of these (nothing is downloaded).
    """
    if found := preset_for(model):
        return found.arch, f"preset {found.name}"
    if Path(model).is_dir():
        config = Path(model) / "config.json"
        if not config.is_file():
            return None, f"{display_path(model)} has no config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(model, "config.json")
        except ValueError:  # not a hub id either (a folder that does not exist): the data check names it
            cached = None
        if not isinstance(cached, str):
            return None, f"no config.json for {model} (not a preset, a folder, or a hub model in the local cache)"
        config = Path(cached)
    try:
        return Arch.from_config(json.loads(config.read_text(encoding="utf-8"))), display_path(str(config))
    except (KeyError, TypeError, ValueError) as e:
        return None, f"{display_path(str(config))} is not a Qwen2-style config ({type(e).__name__}: {e})"


def resolve(model: str) -> str:
    """The model to load for `model`: a preset name gives its hub id; a hub id or a folder is used as it is."""
    return preset(model).id if model in names() else model


def choose(model: str | None, base_model: str | None) -> tuple[Preset, str, str]:
    """(preset, base model, why) from the MODEL and BASE_MODEL settings; empty is unset.

    MODEL picks the preset (a name, or a preset's hub id); BASE_MODEL, a hub id or a folder, replaces its model and
    keeps its sizes (a local copy, a fine-tune of the same size). Alone, BASE_MODEL gets the preset whose model it
    is, else the default preset's sizes. Both naming different presets' models is refused: a .env from before
    presets holds BASE_MODEL=Qwen/Qwen2.5-0.5B-Instruct, which beside MODEL=qwen2.5-7b would train the 0.5B model
    with the 7B's settings.
    """
    chosen = preset_for(model) if model else None
    if model and chosen is None:
        raise PresetError(
            f"MODEL={model!r}: unknown model preset; the presets: {', '.join(names())} (verl_configs/models/). "
            "A model of your own: BASE_MODEL (hub id or folder) with MODEL set to the preset of its size"
        )
    base = preset_for(base_model) if base_model else None
    if chosen and base_model:
        if base and base.name != chosen.name:
            raise PresetError(
                f"MODEL={model} picks {chosen.id}, but BASE_MODEL={base_model} is preset {base.name}'s model: "
                "unset BASE_MODEL (a .env from before presets sets it) or set MODEL to match"
            )
        return chosen, base_model, f"BASE_MODEL={base_model} with preset {chosen.name}'s sizes (MODEL={model})"
    if chosen:
        return chosen, chosen.id, f"MODEL={model}"
    if base_model:
        if base:
            return base, base_model, f"BASE_MODEL={base_model}, preset {base.name}'s model (MODEL unset)"
        return (
            preset(DEFAULT_PRESET),
            base_model,
            f"BASE_MODEL={base_model} with the default preset {DEFAULT_PRESET}'s sizes (MODEL unset: set it to "
            "the preset of the model's size)",
        )
    return preset(DEFAULT_PRESET), preset(DEFAULT_PRESET).id, f"the default preset {DEFAULT_PRESET} (MODEL unset)"


DEFAULT_MODEL = preset(DEFAULT_PRESET).id  # what every stage starts from unless told otherwise
