"""notebooks/sft.py on its own: data checks, batching efficiency, padding-free correctness, outputs on disk."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat

import pytest
import torch

from notebooks import sft
from scripts.bench_sft_packing import measure_batching
from scripts.lib import evaluation as ev


def _cfg(tmp_path, **overrides) -> sft.SFTRunConfig:
    return sft.SFTRunConfig(**{"run_name": "pytest", "output_dir": str(tmp_path / "out"), **overrides})


def test_missing_data_stops_with_the_command_that_makes_it(tmp_path):
    cfg = _cfg(tmp_path, data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as err:
        sft.check_data(cfg)
    message = str(err.value)
    assert "sft_train.parquet, sft_val.parquet, val.parquet" in message
    assert f"prepare_gsm8k.py --output-dir {tmp_path / 'nowhere'}" in message


def test_data_from_an_older_prompt_template_is_refused(tmp_path, gsm8k_data_dir):
    stale = tmp_path / "gsm8k"
    shutil.copytree(gsm8k_data_dir, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    (stale / "manifest.json").write_text(json.dumps({**manifest, "prompt_version": "gsm8k-v0"}))
    with pytest.raises(ValueError, match="--force"):
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

    cfg = _cfg(tmp_path, data_dir=str(gsm8k_data_dir), model_path=model.format(tmp=tmp_path))
    loaded_before = "transformers.models.qwen2.modeling_qwen2" in sys.modules
    with pytest.raises(FileNotFoundError, match=says):
        sft.check_data(cfg)
    assert ("transformers.models.qwen2.modeling_qwen2" in sys.modules) == loaded_before  # nothing was loaded


def test_a_model_folder_or_a_cached_hub_id_passes_the_check(tmp_path, gsm8k_data_dir, tiny_model_dir):
    assert sft.check_data(_cfg(tmp_path, data_dir=str(gsm8k_data_dir), model_path=str(tiny_model_dir)))


def test_paths_default_under_the_repo_and_keep_absolute_ones(tmp_path):
    cfg = sft.SFTRunConfig(run_name="r1")
    assert cfg.data_path == sft.REPO_ROOT / "data" / "gsm8k"
    assert cfg.output_path == sft.REPO_ROOT / "models" / "sft" / "r1"
    assert cfg.manifest_file == sft.REPO_ROOT / "models" / "sft" / "latest.json"
    assert sft.SFTRunConfig().run_name.startswith("sft-")  # named after the run when not given
    assert _cfg(tmp_path).output_path == tmp_path / "out"
    assert all(k.startswith("sft.") for k in cfg.params())  # never collides with the Trainer's own params


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batching": "bucketed"}, "choose one of packed, padding_free, padded"),
        ({"eval_backend": "tgi"}, "choose one of auto, vllm, hf"),
        ({"num_train_epochs": 0, "max_steps": -1}, "num_train_epochs > 0 or max_steps > 0"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        sft.SFTRunConfig(**overrides)


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, gsm8k_data_dir, tmp_path_factory):
    cfg = sft.SFTRunConfig(
        model_path=str(tiny_model_dir),
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
        mode_cfg = sft.SFTRunConfig(**{**vars(cfg), "batching": mode})
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
    padded_cfg = sft.SFTRunConfig(**{**vars(cfg), "batching": "padded"})
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

    cfg = _cfg(tmp_path, manifest_path=str(tmp_path / "models" / "sft" / "latest.json"), model_path="base/model")
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
    assert on_disk["eval_accuracy"] == {"strict": 0.5, "flexible": 1.0}
    assert on_disk["created_at"].endswith("+00:00")
    assert [p.name for p in cfg.manifest_file.parent.iterdir()] == ["latest.json"]  # no temp file left
    assert stat.S_IMODE(cfg.manifest_file.stat().st_mode) == 0o664
    for created in (tmp_path / "models", tmp_path / "models" / "sft"):  # dirs it made: the group can write there
        assert stat.S_IMODE(created.stat().st_mode) == 0o775
    inside = dataclasses.replace(cfg, output_dir="models/sft/r1")
    assert sft.write_manifest(inside, "run123", after)["path"] == "models/sft/r1"  # in the repo: valid in both
