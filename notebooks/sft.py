"""SFT of a chat model on GSM8K with TRL: the tested logic behind notebooks/sft_training.ipynb, one step a function.

Batching (`batching`): `packed` (default: TRL best-fit-decreasing packing fed padding-free), `padding_free`, or
`padded` (the baseline scripts/bench/sft_packing.py measures against). Loss on the completion only. GPU: fp32
master weights, bf16 autocast, FlashAttention-2 when installed (else SDPA); CPU: fp32 and SDPA.

`lora_rank > 0` trains a LoRA adapter (peft, through SFTTrainer's `peft_config`) instead of every weight, and
`quantization = "4bit"` loads the frozen base in 4-bit NF4 (bitsandbytes; QLoRA, CUDA only). Either way the run
saves the adapter in `<output_dir>/adapter/` and the merged model (peft's merge_and_unload onto the base in full
precision) in `<output_dir>/`, where a full fine-tune saves its model: RL and evaluation load it unchanged.
"""

from __future__ import annotations

import ast
import dataclasses
import gc
import importlib.util
import json
import logging
import os
import shutil
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data import readiness
from data.prompt import PROMPT_VERSION
from rewards import REWARDS
from scripts.eval import evaluation
from scripts.lib import lora, model_presets
from scripts.lib.atomic import atomic_dir, atomic_write
from scripts.lib.checkpoints import check_model
from scripts.lib.mlflow_health import check_mlflow
from scripts.lib.paths import display_path, under_repo
from scripts.lib.resilient_mlflow import use_resilient_mlflow

if TYPE_CHECKING:
    import datasets
    import mlflow
    import pandas as pd
    import peft
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import SFTTrainer

logger = logging.getLogger(__name__)

BATCHING = ("packed", "padding_free", "padded")
QUANTIZATION = (None, "4bit")  # 4bit: QLoRA (bitsandbytes NF4 base, bf16 compute), on a CUDA GPU only
ADAPTER_DIR = "adapter"  # a LoRA run's adapter, inside its output_dir (beside the merged model)
NOTEBOOK = Path(__file__).with_name("sft_training.ipynb")  # its parameters cell holds every knob's value
PARAMETERS_TAG = "parameters"  # papermill's
OLD_MODEL_KNOB = "model_path"  # `model`'s name before presets: `-p model_path X` and model_path=X still set `model`


class KnobError(ValueError):
    """A knob is missing, unknown, not a literal in the parameters cell, or of the wrong type."""


def notebook_parameters(notebook: str | Path = NOTEBOOK) -> dict[str, Any]:
    """The knobs and their values in `notebook`'s parameters cell (the one tagged `parameters`), read with `ast`.

    The cell holds only `name = <literal>` lines (and comments): anything else, or a name set twice, is a
    KnobError naming the line. Nothing in the cell is executed.
    """
    cells = [
        c for c in json.loads(Path(notebook).read_text())["cells"] if PARAMETERS_TAG in c["metadata"].get("tags", [])
    ]
    if len(cells) != 1:
        raise KnobError(f"{display_path(str(notebook))}: {len(cells)} cells are tagged {PARAMETERS_TAG!r}; want one")
    source = "".join(cells[0]["source"])
    lines = source.splitlines()
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        where = f"{display_path(str(notebook))}, parameters cell, line {node.lineno}: {lines[node.lineno - 1]!r}"
        if not isinstance(target, ast.Name):
            raise KnobError(f"{where} is not `name = <literal value>`")
        if target.id in values:
            raise KnobError(f"{where} sets {target.id} a second time")
        try:
            values[target.id] = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError):
            raise KnobError(f"{where}: the value is not a literal (a number, string, bool, None, ...)") from None
    return values


@dataclass(kw_only=True)
class SFTRunConfig:
    """Every knob of one SFT run: its name and type. The values, and what each knob means, live in one place: the
    parameters cell of notebooks/sft_training.ipynb (papermill's `-p` and a researcher both edit them there).

    In the notebook: `SFTRunConfig.from_namespace(globals())`; anywhere else (tests, scripts):
    `SFTRunConfig.from_notebook(**overrides)`, the cell's values with some replaced.

    `model` is a model preset's name (verl_configs/models/, scripts/lib/model_presets), a hub id or a folder (empty:
    the default preset, as the environment knobs MODEL and BASE_MODEL read empty as unset). The
    size-dependent knobs (the preset's `sft:` keys: batch size, accumulation, learning rate, gradient
    checkpointing) may be None: they then take the values of the preset `model` names (by name or hub id), else of
    the default preset (a folder or another hub id: set them).
    """

    model: str
    data_dir: str
    output_dir: str | None
    manifest_path: str
    num_train_epochs: float
    max_steps: int
    learning_rate: float | None  # None: the model preset's
    warmup_ratio: float
    per_device_train_batch_size: int | None  # None: the model preset's
    gradient_accumulation_steps: int | None  # None: the model preset's
    max_length: int
    batching: str
    gradient_checkpointing: bool | None  # None: the model preset's
    lora_rank: int  # 0: full fine-tuning
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: str | list  # peft's target_modules: "all-linear" or module names
    quantization: str | None  # None | "4bit"
    max_samples: int | None
    eval_samples: int
    eval_max_new_tokens: int
    eval_batch_size: int
    eval_backend: str
    logging_steps: int
    mlflow_experiment: str
    run_name: str | None  # None: sft-<UTC timestamp>, set here
    seed: int
    system_metrics_interval_s: float

    @classmethod
    def knobs(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> SFTRunConfig:
        """The config from the knobs in `namespace` (the notebook's `globals()`: its parameters cell, and papermill's
        injected `-p` values); other names there are ignored. A knob it lacks is a KnobError naming it."""
        if OLD_MODEL_KNOB in namespace:  # papermill's `-p model_path X`, injected after the cell: the caller's choice
            namespace = {**namespace, "model": namespace[OLD_MODEL_KNOB]}
        missing = [name for name in cls.knobs() if name not in namespace]
        if missing:
            raise KnobError(
                f"no value for {', '.join(missing)}: set it in the parameters cell of {display_path(str(NOTEBOOK))} "
                "(the cell tagged 'parameters'), run that cell, then this one"
            )
        return cls(**{name: namespace[name] for name in cls.knobs()})

    @classmethod
    def from_notebook(cls, notebook: str | Path = NOTEBOOK, /, **overrides: Any) -> SFTRunConfig:
        """The config the notebook runs by default (its parameters cell), with `overrides` replacing some knobs."""
        values = notebook_parameters(notebook)
        where = f"the parameters cell of {display_path(str(notebook))}"
        extra, missing = sorted(values.keys() - cls.knobs()), [k for k in cls.knobs() if k not in values]
        if extra:
            raise KnobError(f"{where} sets {', '.join(extra)}, which SFTRunConfig (notebooks/sft.py) has no field for")
        if missing:
            raise KnobError(f"{where} sets no {', '.join(missing)}: add `name = <value>` lines for them there")
        overrides = {("model" if k == OLD_MODEL_KNOB else k): v for k, v in overrides.items()}
        unknown = sorted(overrides.keys() - values.keys())
        if unknown:
            raise KnobError(f"unknown knob {', '.join(unknown)}; the knobs: {', '.join(cls.knobs())}")
        return cls(**{**values, **overrides})

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for name in self.knobs():
            setattr(self, name, _checked(name, getattr(self, name), hints[name]))
        self.model = self.model or model_presets.DEFAULT_PRESET  # empty (`-p model "${BASE_MODEL:-$MODEL}"`): default
        for name in (k for k in PRESET_KNOBS if getattr(self, k) is None):  # left None: the preset's value
            if self.preset.sft.get(name) is None:
                raise KnobError(f"{name}=None, and preset {self.preset.name} ({self.preset.path}) sets no value")
            setattr(self, name, _checked(name, self.preset.sft[name], hints[name]))
        if self.batching not in BATCHING:
            raise ValueError(f"batching={self.batching!r}; choose one of {', '.join(BATCHING)}")
        if self.eval_backend not in evaluation.BACKENDS:
            raise ValueError(f"eval_backend={self.eval_backend!r}; choose one of {', '.join(evaluation.BACKENDS)}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set num_train_epochs > 0 or max_steps > 0")
        self._check_lora()
        if self.run_name is None:
            self.run_name = "sft-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")

    def _check_lora(self) -> None:
        """LoRA and QLoRA knobs: a clear ValueError naming the knob, before any model loads."""
        if self.lora_rank < 0 or (self.lora_rank and self.lora_alpha <= 0) or not 0 <= self.lora_dropout < 1:
            raise ValueError(
                f"lora_rank={self.lora_rank}, lora_alpha={self.lora_alpha}, lora_dropout={self.lora_dropout}: "
                "want lora_rank 0 (full fine-tuning) or > 0 (a LoRA adapter), lora_alpha > 0, 0 <= lora_dropout < 1"
            )
        if self.quantization not in QUANTIZATION:
            raise ValueError(f"quantization={self.quantization!r}; choose None (full precision) or '4bit' (QLoRA)")
        if self.quantization is None:
            return
        if not self.lora_rank:
            raise ValueError(
                f"quantization={self.quantization!r} trains a LoRA adapter on a frozen 4-bit model (QLoRA): "
                "set lora_rank > 0 too (e.g. 16), or quantization = None for full fine-tuning"
            )
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                f"quantization={self.quantization!r} (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit kernels do not "
                "run here. Set quantization = None (LoRA in full precision, lora_rank > 0, runs on CPU) or run on "
                "the GPU server"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(
                f"quantization={self.quantization!r} needs bitsandbytes, which this kernel's environment lacks "
                "(the jupyter image installs it: services/jupyter/requirements.in)"
            )

    @property
    def lora(self) -> bool:
        """True when the run trains a LoRA adapter (lora_rank > 0), with or without a 4-bit base."""
        return self.lora_rank > 0

    @property
    def adapter_path(self) -> Path:
        """Where a LoRA run saves its adapter: `<output_dir>/adapter/`."""
        return self.output_path / ADAPTER_DIR

    @property
    def preset(self) -> model_presets.Preset:
        """The preset whose sizes apply: the one `model` names (by name or hub id), else the default one."""
        return model_presets.preset_for(self.model) or model_presets.preset(model_presets.DEFAULT_PRESET)

    @property
    def model_path(self) -> str:
        """What to load: a preset's hub id, or `model` as given (a hub id or a folder)."""
        return model_presets.resolve(self.model)

    @property
    def data_path(self) -> Path:
        return under_repo(self.data_dir)

    @property
    def output_path(self) -> Path:
        return under_repo(self.output_dir or f"models/sft/{self.run_name}")

    @property
    def manifest_file(self) -> Path:
        return under_repo(self.manifest_path)

    def params(self) -> dict[str, Any]:
        """MLflow params, prefixed `sft.` so they never collide with the Trainer's own (params are immutable)."""
        return {f"sft.{k}": v for k, v in dataclasses.asdict(self).items()}


# The knobs that may be None in the parameters cell, meaning the model preset's value (its `sft:` keys).
PRESET_KNOBS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "gradient_checkpointing",
)


def _checked(name: str, value: Any, hint: Any) -> Any:
    """`value` if it has the knob's type (an int where a float is wanted becomes one), else a KnobError naming it."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if float in allowed and type(value) is int:
        return float(value)
    if isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed):
        return value
    wanted = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
    raise KnobError(f"{name}={value!r}: a {type(value).__name__}, want {wanted}")


def check_data(cfg: SFTRunConfig) -> dict[str, Path]:
    """The parquet files SFT needs (data/readiness.py's check: missing or stale data raises DataNotReady with the
    data-prep command, to run in a JupyterLab terminal). Also checks `model_path` (a model folder, or a hub id
    that can load), so a typo stops here, not minutes later.
    """
    readiness.check_data(cfg.data_path, readiness.SFT_FILES)
    check_model(cfg.model_path)
    return {name.removesuffix(".parquet"): cfg.data_path / name for name in readiness.SFT_FILES}


def load_sft_datasets(cfg: SFTRunConfig, files: dict[str, Path]) -> tuple[datasets.Dataset, datasets.Dataset]:
    """sft_train (first `max_samples` rows) and sft_val as TRL conversational prompt-completion datasets."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    def read(path: Path, limit: int | None) -> Dataset:
        rows = pq.read_table(path, columns=["prompt", "completion"]).to_pylist()
        return Dataset.from_list(rows[:limit] if limit is not None else rows)

    return read(files["sft_train"], cfg.max_samples), read(files["sft_val"], None)


def load_model(cfg: SFTRunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model in fp32 (bf16 autocast on GPU keeps fp32 master weights: 1e-5 updates would vanish in bf16);
    with `quantization="4bit"` its linear layers in 4-bit NF4 (bitsandbytes, double quantization, bf16 compute:
    QLoRA's recipe), the rest in bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from transformers.utils import is_flash_attn_2_available

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    if tokenizer.chat_template is None:
        raise ValueError(f"{cfg.model_path} has no chat template; SFT data is chat-formatted, use an instruct model")
    attention = "sdpa"
    if torch.cuda.is_available() and is_flash_attn_2_available():
        attention = "flash_attention_2"  # packed, padding-free batches run its variable-length kernel
    elif torch.cuda.is_available():
        logger.warning("flash-attn is not installed: SDPA with a block-diagonal mask (correct, slower)")
    quantized: dict[str, Any] = {}
    if cfg.quantization == "4bit":
        quantized = {
            "dtype": torch.bfloat16,
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
        }
    model = AutoModelForCausalLM.from_pretrained(
        cfg.model_path, attn_implementation=attention, **({"dtype": torch.float32} | quantized)
    )
    logger.info(
        "loaded %s: %.0fM parameters, attention %s%s",
        cfg.model_path,
        model.num_parameters() / 1e6,
        model.config._attn_implementation,
        ", 4-bit NF4 (QLoRA)" if quantized else "",
    )
    return model, tokenizer


def lora_config(cfg: SFTRunConfig) -> peft.LoraConfig | None:
    """peft's LoraConfig for SFTTrainer's `peft_config` (None: full fine-tuning)."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def build_trainer(
    cfg: SFTRunConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: datasets.Dataset,
    eval_dataset: datasets.Dataset | None = None,
    report_to: tuple[str, ...] = ("mlflow",),
) -> SFTTrainer:
    """A TRL SFTTrainer for `cfg`, logging into the run `start_mlflow_run` opened through
    scripts/lib/resilient_mlflow.py's callback (training outlives an MLflow outage; params carry no secrets)."""
    import torch
    from trl import SFTConfig, SFTTrainer

    check_output_dir(cfg)
    shutil.rmtree(_staging_dir(cfg), ignore_errors=True)  # left by an interrupted attempt
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(_staging_dir(cfg)),  # nothing is saved during the run; the final model is renamed into place
        run_name=cfg.run_name,
        seed=cfg.seed,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a fraction of the total steps
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        gradient_checkpointing=cfg.gradient_checkpointing,  # TRL defaults to True; the notebook's is False
        bf16=cuda,  # autocast; TRL's default (True) would also turn it on for CPU
        tf32=True if cuda else None,
        max_length=None if cfg.batching == "padding_free" else cfg.max_length,
        packing=cfg.batching == "packed",
        packing_strategy="bfd",
        padding_free=cfg.batching != "padded",
        completion_only_loss=True,
        eval_strategy="epoch" if eval_dataset is not None else "no",
        save_strategy="no",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=list(report_to),
        include_num_input_tokens_seen="non_padding",  # logs num_input_tokens_seen and train_tokens_per_second
        dataloader_pin_memory=cuda,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),  # LoRA: TRL wraps the model with peft (and prepares a 4-bit one for training)
    )
    if cfg.lora:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        share = 100 * trainable / total
        logger.info("LoRA r=%d: %d of %d parameters trainable (%.2f%%)", cfg.lora_rank, trainable, total, share)
    use_resilient_mlflow(trainer)  # training outlives an MLflow outage; params without secrets
    return trainer


def _staging_dir(cfg: SFTRunConfig) -> Path:
    return cfg.output_path.with_name(cfg.output_path.name + ".partial")


def check_output_dir(cfg: SFTRunConfig) -> Path:
    """Fail before training, not after, if `output_dir` already holds something."""
    out = cfg.output_path
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; pick another run_name/output_dir or delete it")
    return out


def start_mlflow_run(cfg: SFTRunConfig) -> mlflow.ActiveRun:
    """Open the notebook's one MLflow run (MLFLOW_TRACKING_URI from the environment), system metrics on."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        logger.warning("MLFLOW_TRACKING_URI is not set: MLflow logs to %s", mlflow.get_tracking_uri())
    check_mlflow()
    if mlflow.active_run() is not None:  # a previous attempt in this kernel failed half-way
        logger.warning("ending the MLflow run %s left open by an earlier attempt", mlflow.active_run().info.run_id)
        mlflow.end_run(status="KILLED")
    mlflow.set_experiment(cfg.mlflow_experiment)
    mlflow.set_system_metrics_sampling_interval(cfg.system_metrics_interval_s)
    run = mlflow.start_run(
        run_name=cfg.run_name,
        log_system_metrics=True,  # CPU/RAM always; GPU memory and utilisation need nvidia-ml-py
        tags={
            "stage": "sft",
            "base_model": cfg.model_path,
            "model_preset": cfg.preset.name,
            "checkpoint_path": str(cfg.output_path),
            "prompt_version": PROMPT_VERSION,
        },
    )
    mlflow.log_params({**cfg.params(), "base_model": cfg.model_path, "checkpoint_path": str(cfg.output_path)})
    data_manifest = cfg.data_path / "manifest.json"
    if data_manifest.is_file():
        mlflow.log_artifact(str(data_manifest), artifact_path="data")
    return run


def end_mlflow_run() -> None:
    import mlflow

    mlflow.flush_async_logging()  # the Trainer's MLflowCallback logs asynchronously
    mlflow.end_run()


def evaluate_model(cfg: SFTRunConfig, model: str | Path, stage: str) -> evaluation.EvalResult:
    """Greedy accuracy on the first `eval_samples` val problems (scripts/eval/evaluation.py), as `val_<stage>/`."""
    import mlflow

    result = evaluation.evaluate(
        model,
        cfg.data_path / "val.parquet",
        backend=cfg.eval_backend,
        limit=cfg.eval_samples,
        max_new_tokens=cfg.eval_max_new_tokens,
        batch_size=cfg.eval_batch_size,
    )
    if mlflow.active_run() is not None:
        evaluation.log_to_mlflow(result, f"val_{stage}")
    return result


def log_training_summary(trainer: SFTTrainer) -> dict[str, float]:
    """Steps, real tokens (TRL's count), real tokens/s, final loss and peak GPU memory, logged to MLflow."""
    import mlflow
    import torch

    state = trainer.state
    runtime = next((h["train_runtime"] for h in reversed(state.log_history) if "train_runtime" in h), float("nan"))
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    tokens = state.num_input_tokens_seen
    summary = {
        "train_steps": float(state.global_step),
        "train_real_tokens": float(tokens),
        "train_real_tokens_per_second": tokens / runtime if runtime and runtime > 0 else float("nan"),
        "train_final_loss": losses[-1] if losses else float("nan"),
    }
    if torch.cuda.is_available():
        summary["gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if mlflow.active_run() is not None:
        mlflow.log_metrics(summary, step=state.global_step)
    return summary


def save_checkpoint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: SFTRunConfig) -> Path:
    """Save model + tokenizer (chat template included) to `output_dir` atomically (never half a model there).

    Saved in bf16 on GPU (what vLLM and verl load; the base model ships in bf16), fp32 on CPU. A LoRA run (`model`
    is trainer.model, a peft model) saves its adapter to `<output_dir>/adapter/` and, in `output_dir`, the merged
    model: the adapter merged (merge_and_unload) into a fresh full-precision copy of the base, never into the
    4-bit weights a QLoRA run trained on.
    """
    import torch

    out = check_output_dir(cfg)
    with atomic_dir(out) as tmp:
        if cfg.lora:
            adapter = tmp / ADAPTER_DIR
            model.save_pretrained(adapter)
            tokenizer.save_pretrained(adapter)
            model = lora.merged_model(cfg.model_path, adapter)
        if torch.cuda.is_available():
            model = model.to(torch.bfloat16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(_staging_dir(cfg), ignore_errors=True)  # the Trainer's output_dir: nothing is kept from it
    logger.info("saved the SFT model to %s", out)
    return out


def write_manifest(cfg: SFTRunConfig, run_id: str, after: evaluation.EvalResult) -> dict[str, Any]:
    """Atomically write the manifest scripts/run_ppo.sh reads (default models/sft/latest.json)."""
    manifest = {
        "path": display_path(str(cfg.output_path.resolve())),  # relative in the repo: valid in every container
        "base_model": cfg.model_path,
        # a LoRA run's adapter; `path` is the merged model, which RL and evaluation load
        "adapter": display_path(str(cfg.adapter_path.resolve())) if cfg.lora else None,
        "mlflow_run_id": run_id,
        "eval_accuracy": dict(after.accuracy),  # by reward name (rewards.REWARDS)
        "eval_samples": after.n,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write(cfg.manifest_file, json.dumps(manifest, indent=2) + "\n")
    logger.info("wrote %s -> %s", cfg.manifest_file, manifest["path"])
    return manifest


def plot_loss(log_history: list[dict[str, float]]) -> Figure:
    """Training loss (and eval loss per epoch, if any) against the optimizer step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train, strict=True), marker=".", label="train loss (completion tokens)")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", linestyle="--", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("SFT loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_accuracy(before: evaluation.EvalResult, after: evaluation.EvalResult) -> Figure:
    """Val accuracy before and after SFT, per registered reward, with 95% Wilson intervals."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    width = 0.38
    for offset, (label, result) in zip((-width / 2, width / 2), (("before", before), ("after", after)), strict=True):
        acc = [result.accuracy[m] for m in REWARDS]
        err = [
            [a - result.ci95[m][0] for a, m in zip(acc, REWARDS, strict=True)],
            [result.ci95[m][1] - a for a, m in zip(acc, REWARDS, strict=True)],
        ]
        bars = ax.bar([i + offset for i in range(len(REWARDS))], acc, width, yerr=err, capsize=4, label=label)
        ax.bar_label(bars, labels=[f"{a:.1%}" for a in acc], padding=2)
    ax.set_xticks(range(len(REWARDS)), list(REWARDS))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"val accuracy (n={after.n})")
    ax.set_title("GSM8K val accuracy, greedy, 95% CI")
    ax.legend()
    fig.tight_layout()
    return fig


def side_by_side(before: evaluation.EvalResult, after: evaluation.EvalResult, k: int = 5) -> pd.DataFrame:
    """The first `k` val problems: answer, and the response before and after SFT, each scored by the first registered
    reward (rewards.REWARDS: gsm8k_strict, the format SFT teaches)."""
    import pandas as pd

    b, a = pd.DataFrame(before.samples[:k]), pd.DataFrame(after.samples[:k])
    reward = next(iter(REWARDS))
    return pd.DataFrame(
        {
            "question": b["question"],
            "answer": b["ground_truth"],
            "before": b["response"],
            f"before_{reward}_ok": b[f"correct_{reward}"],
            "after": a["response"],
            f"after_{reward}_ok": a[f"correct_{reward}"],
        }
    )


def free_gpu_memory() -> str:
    """Collect garbage and release cached CUDA memory; returns what is still held, for the notebook to show."""
    import torch

    gc.collect()
    advice = "Shut the kernel down (Kernel > Shut Down Kernel) before starting RL in the verl container."
    if not torch.cuda.is_available():
        return f"No GPU in this kernel. {advice}"
    torch.cuda.empty_cache()
    held = torch.cuda.memory_reserved() / 2**30
    return f"GPU memory still reserved by this kernel: {held:.2f} GiB, plus the CUDA context (~0.5 GiB). {advice}"
