"""notebooks/sft.py on its own: data checks, batching efficiency, padding-free correctness, outputs on disk."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch

from data.readiness import DataNotReady
from notebooks import sft
from scripts.bench.sft_packing import measure_batching
from scripts.eval import evaluation as ev
from scripts.lib.paths import REPO_ROOT


def _cfg(tmp_path, **overrides) -> sft.SFTRunConfig:
    return sft.SFTRunConfig.from_notebook(**{"run_name": "pytest", "output_dir": str(tmp_path / "out"), **overrides})


def test_missing_data_stops_with_the_command_that_makes_it(tmp_path):
    cfg = _cfg(tmp_path, data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotReady) as err:
        sft.check_data(cfg)
    message = str(err.value)
    assert "sft_train.parquet, sft_val.parquet, val.parquet" in message
    assert f"python -m data.prepare_gsm8k --output-dir {tmp_path / 'nowhere'}" in message


def test_data_from_an_older_prompt_template_is_refused(tmp_path, gsm8k_data_dir):
    stale = tmp_path / "gsm8k"
    shutil.copytree(gsm8k_data_dir, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    (stale / "manifest.json").write_text(json.dumps({**manifest, "prompt_version": "gsm8k-v0"}))
    with pytest.raises(DataNotReady, match="--force"):
        sft.check_data(_cfg(tmp_path, data_dir=str(stale)))


@pytest.mark.parametrize(
    "model, says",
    [
        ("{tmp}/no-such-model", "no such folder, and not a Hugging Face hub id"),
        ("{tmp}", r"holds no model \(no config\.json\)"),
        ("Qwen/Qwen2.5-0.5B-Instruct-typo", "is not in the Hugging Face cache"),  # the suite runs HF_HUB_OFFLINE=1
    ],
)
def test_a_bad_model_path_stops_with_the_data_check_before_any_model_loads(model, says, tmp_path, gsm8k_data_dir):
    import sys

    cfg = _cfg(tmp_path, data_dir=str(gsm8k_data_dir), model=model.format(tmp=tmp_path))
    loaded_before = "transformers.models.qwen2.modeling_qwen2" in sys.modules
    with pytest.raises(FileNotFoundError, match=says):
        sft.check_data(cfg)
    assert ("transformers.models.qwen2.modeling_qwen2" in sys.modules) == loaded_before  # nothing was loaded


def test_a_model_folder_or_a_cached_hub_id_passes_the_check(tmp_path, gsm8k_data_dir, tiny_model_dir):
    assert sft.check_data(_cfg(tmp_path, data_dir=str(gsm8k_data_dir), model=str(tiny_model_dir)))


def test_paths_default_under_the_repo_and_keep_absolute_ones(tmp_path):
    cfg = sft.SFTRunConfig.from_notebook(run_name="r1")
    assert cfg.data_path == REPO_ROOT / "data" / "gsm8k"
    assert cfg.output_path == REPO_ROOT / "models" / "sft" / "r1"
    assert cfg.manifest_file == REPO_ROOT / "models" / "sft" / "latest.json"
    assert sft.SFTRunConfig.from_notebook().run_name.startswith("sft-")  # named after the run when not given
    assert _cfg(tmp_path).output_path == tmp_path / "out"
    assert all(k.startswith("sft.") for k in cfg.params())  # never collides with the Trainer's own params


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batching": "bucketed"}, "choose one of packed, padding_free, padded"),
        ({"eval_backend": "tgi"}, "choose one of auto, vllm, hf"),
        ({"num_train_epochs": 0, "max_steps": -1}, "num_train_epochs > 0 or max_steps > 0"),
        ({"lora_rank": -8}, r"lora_rank=-8, .*want lora_rank 0 \(full fine-tuning\) or > 0"),
        ({"lora_rank": 8, "lora_alpha": 0}, "lora_alpha > 0"),
        ({"quantization": "8bit"}, r"quantization='8bit'; choose None \(full precision\) or '4bit' \(QLoRA\)"),
        ({"quantization": "4bit"}, r"quantization='4bit' trains a LoRA adapter .*set lora_rank > 0"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        sft.SFTRunConfig.from_notebook(**overrides)


# --- one home per knob: the notebook's parameters cell holds the values, SFTRunConfig the names and types ------


def _notebook(tmp_path, parameters: str, tags=("parameters",)) -> Path:
    """A copy of the SFT notebook whose parameters cell is `parameters`."""
    nb = json.loads(sft.NOTEBOOK.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"], cell["metadata"]["tags"] = parameters.splitlines(keepends=True), list(tags)
    path = tmp_path / "sft_training.ipynb"
    path.write_text(json.dumps(nb))
    return path


def _cell_source() -> str:
    nb = json.loads(sft.NOTEBOOK.read_text())
    return "".join(next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])


def _with_line(knob: str, lines: str) -> str:
    """The notebook's parameters cell with `knob`'s line replaced by `lines`."""
    source, count = re.subn(rf"^{knob} = .*\n?", lines and lines + "\n", _cell_source(), flags=re.MULTILINE)
    assert count == 1, f"the parameters cell sets {knob} {count} times"
    return source


def test_from_notebook_takes_the_parameters_cell_and_applies_overrides(tmp_path):
    edited = _with_line("learning_rate", "learning_rate = 3e-4  # a researcher's edit")
    cfg = sft.SFTRunConfig.from_notebook(_notebook(tmp_path, edited), max_steps=7, run_name="r")
    assert cfg.learning_rate == 3e-4  # the cell's value, read from the file, not a copy in notebooks/sft.py
    assert cfg.max_steps == 7 and cfg.run_name == "r"
    assert cfg.eval_max_new_tokens == sft.notebook_parameters()["eval_max_new_tokens"]
    assert isinstance(cfg.num_train_epochs, float)  # `num_train_epochs = 3` in the cell: a float knob
    assert cfg.params()["sft.max_steps"] == 7 and set(cfg.params()) == {f"sft.{k}" for k in sft.SFTRunConfig.knobs()}


def test_an_unknown_override_is_refused_with_the_knobs_listed():
    with pytest.raises(sft.KnobError, match=r"unknown knob max_step; the knobs: model, .*max_steps"):
        sft.SFTRunConfig.from_notebook(max_step=50)


def test_a_knob_missing_from_the_namespace_is_refused_by_name():
    namespace = {**sft.notebook_parameters(), "In": [], "sft": sft}  # like the notebook's globals()
    assert sft.SFTRunConfig.from_namespace(namespace).seed == namespace["seed"]  # other names are ignored
    del namespace["warmup_ratio"], namespace["seed"]
    with pytest.raises(sft.KnobError, match=r"no value for warmup_ratio, seed: set it in the parameters cell"):
        sft.SFTRunConfig.from_namespace(namespace)


def test_every_knob_is_required_so_none_has_a_second_default():
    with pytest.raises(TypeError, match="missing"):
        sft.SFTRunConfig(run_name="r")


@pytest.mark.parametrize(
    "knob, lines, message",
    [
        ("max_length", "max_length = 512 * 2", r"line \d+: 'max_length = 512 \* 2': the value is not a literal"),
        ("seed", "seed = int(os.environ['SEED'])", r"line \d+: .*the value is not a literal"),
        ("seed", "seed = 42\nseed = 7", r"line \d+: 'seed = 7' sets seed a second time"),
        ("seed", "import os", r"line \d+: 'import os' is not `name = <literal value>`"),
        ("seed", "seed = 42\nseeds = 7", r"sets seeds, which SFTRunConfig .* has no field for"),
        ("seed", "", r"sets no seed: add `name = <value>` lines"),
    ],
)
def test_the_parameters_cell_must_be_literal_assignments_of_exactly_the_knobs(tmp_path, knob, lines, message):
    notebook = _notebook(tmp_path, _with_line(knob, lines))
    with pytest.raises(sft.KnobError, match=message):
        sft.SFTRunConfig.from_notebook(notebook)


def test_a_notebook_without_one_parameters_cell_is_refused(tmp_path):
    with pytest.raises(sft.KnobError, match="0 cells are tagged 'parameters'"):
        sft.notebook_parameters(_notebook(tmp_path, _cell_source(), tags=()))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_steps": "fifty"}, r"max_steps='fifty': a str, want int"),
        ({"max_steps": True}, r"max_steps=True: a bool, want int"),
        ({"max_samples": 1.5}, r"max_samples=1.5: a float, want int or None"),
        ({"data_dir": None}, r"data_dir=None: a NoneType, want str"),
    ],
)
def test_a_knob_of_the_wrong_type_is_refused(overrides, message):
    with pytest.raises(sft.KnobError, match=message):
        sft.SFTRunConfig.from_notebook(**overrides)


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, gsm8k_data_dir, tmp_path_factory):
    cfg = sft.SFTRunConfig.from_notebook(
        model=str(tiny_model_dir),
        data_dir=str(gsm8k_data_dir),
        output_dir=str(tmp_path_factory.mktemp("sft-unit") / "out"),
        run_name="unit",
        per_device_train_batch_size=4,
    )
    files = sft.check_data(cfg)
    train_dataset, _ = sft.load_sft_datasets(cfg, files)
    model, tokenizer = sft.load_model(cfg)
    return cfg, model, tokenizer, train_dataset


def test_packing_feeds_only_real_tokens(tiny_run):
    cfg, model, tokenizer, train_dataset = tiny_run
    measured = {}
    for mode in sft.BATCHING:
        mode_cfg = dataclasses.replace(cfg, batching=mode)
        trainer = sft.build_trainer(mode_cfg, model, tokenizer, train_dataset, report_to=())
        measured[mode] = measure_batching(trainer)
    assert measured["packed"]["real_token_fraction"] == 1.0  # target: >= 0.95
    assert measured["padding_free"]["real_token_fraction"] == 1.0
    assert measured["padded"]["real_token_fraction"] < 0.97  # the fixture's lengths vary: padding costs
    assert len({m["real_tokens"] for m in measured.values()}) == 1  # same tokens, nothing truncated or lost
    assert measured["packed"]["batches"] < measured["padded"]["batches"]


def test_padding_free_batches_give_the_same_loss_as_padded_ones(tiny_run):
    """On CPU (SDPA), transformers turns packed position_ids into a block-diagonal mask, so no sequence attends to
    another and the loss equals the padded one; with plain positions (no resets) the sequences would leak."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    cfg, model, tokenizer, train_dataset = tiny_run
    padded_cfg = dataclasses.replace(cfg, batching="padded")
    trainer = sft.build_trainer(padded_cfg, model, tokenizer, train_dataset, report_to=())
    examples = [{k: trainer.train_dataset[i][k] for k in ("input_ids", "labels")} for i in range(4)]
    model = AutoModelForCausalLM.from_pretrained(cfg.model_path, attn_implementation="sdpa").eval()
    torch.manual_seed(1)
    with torch.no_grad():  # larger random weights: the loss then depends on what each token can attend to
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.3)
    pad = tokenizer.pad_token_id
    padded = DataCollatorForLanguageModeling(pad_token_id=pad)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)(examples)
    assert flat["input_ids"].shape[0] == 1 and (flat["input_ids"] != pad).all()
    ids, labels = flat["input_ids"], flat["labels"]
    with torch.no_grad():  # use_cache=False as in SFTTrainer.compute_loss (with a KV cache, no packed mask)
        loss_padded = model(**padded, use_cache=False).loss.item()
        loss_flat = model(input_ids=ids, position_ids=flat["position_ids"], labels=labels, use_cache=False).loss.item()
        plain = torch.arange(ids.shape[1])[None]
        loss_leaky = model(input_ids=ids, position_ids=plain, labels=labels, use_cache=False).loss.item()
    assert loss_flat == pytest.approx(loss_padded, abs=1e-4)
    assert abs(loss_leaky - loss_padded) > 1e-2


def test_existing_output_dir_is_refused_before_training(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.output_path.mkdir()
    (cfg.output_path / "model.safetensors").write_text("an earlier run")
    with pytest.raises(FileExistsError, match="pick another run_name/output_dir"):
        sft.check_output_dir(cfg)


def test_manifest_is_atomic_and_writable_by_every_container(tmp_path):
    """Under the stack's umask (0002) the manifest and the folders made for it are group-writable: jupyter (HOST_UID)
    and verl (root, group HOST_GID) can both replace it."""
    import os

    cfg = _cfg(tmp_path, manifest_path=str(tmp_path / "models" / "sft" / "latest.json"), model="base/model")
    problems = [ev.Problem(0, "q", "5", [])] * 2
    after = ev.score(problems, ["#### 5", "\\boxed{5}"])
    old_umask = os.umask(0o002)
    try:
        manifest = sft.write_manifest(cfg, "run123", after)
    finally:
        os.umask(old_umask)
    on_disk = json.loads(cfg.manifest_file.read_text())
    assert on_disk == manifest
    assert on_disk["path"] == str(cfg.output_path.resolve())  # outside the repo: absolute
    assert on_disk["base_model"] == "base/model" and on_disk["mlflow_run_id"] == "run123"
    assert on_disk["eval_accuracy"] == {"gsm8k_strict": 0.5, "gsm8k_flexible": 1.0}  # by reward name
    assert on_disk["created_at"].endswith("+00:00")
    assert [p.name for p in cfg.manifest_file.parent.iterdir()] == ["latest.json"]  # no temp file left
    assert stat.S_IMODE(cfg.manifest_file.stat().st_mode) == 0o664
    for created in (tmp_path / "models", tmp_path / "models" / "sft"):  # dirs it made: the group can write there
        assert stat.S_IMODE(created.stat().st_mode) == 0o775
    inside = dataclasses.replace(cfg, output_dir="models/sft/r1")
    assert sft.write_manifest(inside, "run123", after)["path"] == "models/sft/r1"  # in the repo: valid in both


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
def test_qlora_without_a_gpu_is_refused_naming_the_knob_before_any_model_loads():
    import sys

    loaded_before = "transformers.models.qwen2.modeling_qwen2" in sys.modules
    with pytest.raises(ValueError, match=r"quantization='4bit' \(QLoRA\) needs a CUDA GPU.*quantization = None"):
        sft.SFTRunConfig.from_notebook(quantization="4bit", lora_rank=16)
    assert ("transformers.models.qwen2.modeling_qwen2" in sys.modules) == loaded_before


@pytest.mark.slow
def test_lora_trains_an_adapter_and_saves_it_with_the_merged_model(tiny_model_dir, gsm8k_data_dir, tmp_path):
    """lora_rank > 0: only the adapter trains; the run saves it in adapter/ and the merged model where a full run saves
    its model, and the manifest points RL at the merged one, which loads and generates like any model folder."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _cfg(
        tmp_path,
        model=str(tiny_model_dir),
        data_dir=str(gsm8k_data_dir),
        manifest_path=str(tmp_path / "latest.json"),
        lora_rank=8,
        lora_alpha=16,
        learning_rate=1e-2,  # a visible change in 2 steps of the random tiny model
        max_steps=2,
        per_device_train_batch_size=4,
    )
    train_dataset, _ = sft.load_sft_datasets(cfg, sft.check_data(cfg))
    model, tokenizer = sft.load_model(cfg)
    trainer = sft.build_trainer(cfg, model, tokenizer, train_dataset, report_to=())
    trainable, total = trainer.model.get_nb_trainable_parameters()
    assert 0 < trainable < total / 2  # the adapter, not the model
    trainer.train()
    out = sft.save_checkpoint(trainer.model, tokenizer, cfg)

    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["r"], adapter["lora_alpha"]) == ("LORA", 8, 16)
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    lora = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any("q_proj.lora_A" in k for k in lora) and any("down_proj.lora_B" in k for k in lora)  # all-linear

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    merged_model = AutoModelForCausalLM.from_pretrained(out)  # a plain HF model folder: no peft needed
    merged = merged_model.state_dict()
    assert not any("lora" in k for k in merged)
    # merged = base + alpha/r * B @ A on every adapted weight; the rest (embeddings, norms) is the base's
    key = "model.layers.0.self_attn.q_proj.weight"
    a, b = (lora[f"base_model.model.{key.removesuffix('.weight')}.lora_{x}.weight"] for x in "AB")
    assert (merged[key] - base[key]).abs().max() > 1e-4
    torch.testing.assert_close(merged[key], base[key] + 16 / 8 * b @ a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    ids = AutoTokenizer.from_pretrained(out)("#### 4", return_tensors="pt").input_ids
    assert merged_model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4

    problems = [ev.Problem(0, "q", "5", [])]
    manifest = sft.write_manifest(cfg, "run1", ev.score(problems, ["#### 5"]))
    assert manifest["path"] == str(out) and manifest["adapter"] == str(out / "adapter")
    from scripts.lib.checkpoints import read_sft_manifest

    assert read_sft_manifest(cfg.manifest_file)["path"] == out  # what run_ppo.sh starts from: the merged model


@pytest.mark.gpu
def test_qlora_trains_an_adapter_on_a_4bit_base_and_hands_over_a_full_precision_merged_model(
    tiny_model_dir, gsm8k_data_dir, tmp_path
):
    """quantization = "4bit": the frozen base loads in NF4 (bitsandbytes), only the adapter trains, and the merged
    model is the adapter on a fresh full-precision base (bf16 on GPU), loadable with no quantization config."""
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    cfg = _cfg(
        tmp_path,
        model=str(tiny_model_dir),
        data_dir=str(gsm8k_data_dir),
        manifest_path=str(tmp_path / "latest.json"),
        quantization="4bit",
        lora_rank=8,
        lora_alpha=16,
        learning_rate=1e-2,
        max_steps=2,
        per_device_train_batch_size=4,
    )
    train_dataset, _ = sft.load_sft_datasets(cfg, sft.check_data(cfg))
    model, tokenizer = sft.load_model(cfg)
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())  # the base is in 4 bits
    trainer = sft.build_trainer(cfg, model, tokenizer, train_dataset, report_to=())
    trainable, total = trainer.model.get_nb_trainable_parameters()
    assert 0 < trainable < total / 2
    trainer.train()
    out = sft.save_checkpoint(trainer.model, tokenizer, cfg)

    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["r"], adapter["lora_alpha"]) == ("LORA", 8, 16)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM and verl load it as a plain bf16 model
    merged = load_file(out / "model.safetensors")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    key = "model.layers.0.self_attn.q_proj.weight"
    assert merged[key].dtype == torch.bfloat16 and not any("lora" in k for k in merged)
    lora = load_file(out / "adapter" / "adapter_model.safetensors")
    a, b = (lora[f"base_model.model.{key.removesuffix('.weight')}.lora_{x}.weight"].float() for x in "AB")
    assert b.abs().max() > 0  # trained (B starts at zero)
    # merged = base + alpha/r * B @ A, on the full-precision base (not the NF4 one), rounded to bf16
    torch.testing.assert_close(merged[key].float(), base[key] + 16 / 8 * b @ a, atol=1e-3, rtol=1e-2)
