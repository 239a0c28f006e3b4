"""scripts/lib: atomic writes, paths, manifests and checkpoints, the MLflow check, the statistics' doctests."""

from __future__ import annotations

import doctest
import json
import os
import stat
from pathlib import Path

import pytest

from data.prompt import PROMPT_VERSION
from data.readiness import stale_prompt
from scripts.eval import stats
from scripts.lib import atomic, checkpoints, paths
from scripts.lib.atomic import atomic_dir, atomic_write
from scripts.lib.checkpoints import latest_step, read_sft_manifest, rl_hf_model
from scripts.lib.mlflow_health import check_mlflow
from tests.mlflow_server import free_port


@pytest.fixture
def umask_0002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_docstring_examples():
    for module in (atomic, checkpoints, paths, stats):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_atomic_write_replaces_with_umask_permissions(tmp_path, umask_0002):
    target = tmp_path / "new" / "a.json"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o664  # 0666 minus the umask: the group may replace it
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o775
    assert os.listdir(target.parent) == ["a.json"]


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write(target, 12)  # type: ignore[arg-type]  # fails after the temp file is open
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path, umask_0002):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash while saving")
    assert os.listdir(tmp_path) == []  # neither the target nor a temporary folder

    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        os.close(os.open(tmp / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600))  # as safetensors saves it
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o775
    assert stat.S_IMODE((target / "model.safetensors").stat().st_mode) == 0o664  # the umask's mode, not 0600

    with pytest.raises(FileExistsError, match="already exists and is not empty"), atomic_dir(target):
        pass
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"w")
    assert os.listdir(target) == ["weights.bin"] and os.listdir(tmp_path) == ["model"]


def test_container_paths_read_as_this_checkout(tmp_path):
    (tmp_path / "models" / "x").mkdir(parents=True)
    assert paths.to_host("/workspace/models/x", root=tmp_path) == tmp_path / "models" / "x"
    assert paths.to_host("/workspace/models/gone", root=tmp_path) == Path("/workspace/models/gone")  # neither: as is
    assert paths.same_path("/workspace/models/x", str(tmp_path / "models" / "x"), root=tmp_path)
    assert not paths.same_path("/workspace/models/x", "/elsewhere/models/x", root=tmp_path)
    assert paths.under_repo("models/x", root=tmp_path) == tmp_path / "models" / "x"
    assert paths.under_repo("/abs") == Path("/abs")


def test_sft_manifest(tmp_path):
    manifest = tmp_path / "models" / "sft" / "latest.json"
    assert read_sft_manifest(manifest, root=tmp_path) is None  # no SFT run yet
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"path": "models/sft/r1", "mlflow_run_id": "abc"}))
    with pytest.raises(ValueError, match=r"names .*models/sft/r1, which holds no model \(no config.json\)"):
        read_sft_manifest(manifest, root=tmp_path)
    (tmp_path / "models" / "sft" / "r1").mkdir()
    (tmp_path / "models" / "sft" / "r1" / "config.json").write_text("{}")
    data = read_sft_manifest(manifest, root=tmp_path)
    assert data == {"path": tmp_path / "models" / "sft" / "r1", "mlflow_run_id": "abc"}  # relative: under the repo
    manifest.write_text(json.dumps({"path": "/workspace/models/sft/r1"}))  # written in a container
    assert read_sft_manifest(manifest, root=tmp_path)["path"] == tmp_path / "models" / "sft" / "r1"
    manifest.write_text("{not json")
    with pytest.raises(ValueError, match=f"{manifest} is not an SFT manifest"):
        read_sft_manifest(manifest, root=tmp_path)


def test_latest_rl_checkpoint(tmp_path):
    exp = tmp_path / "ppo-x"
    exp.mkdir()
    assert latest_step(exp) is None
    with pytest.raises(ValueError, match="no checkpoint in .*ppo-x yet"):
        rl_hf_model(exp)
    for step in (1, 2, 10):
        (exp / f"global_step_{step}" / "actor" / "huggingface").mkdir(parents=True)
    assert latest_step(exp) == 10  # no tracker (async_save): the highest step
    (exp / "latest_checkpointed_iteration.txt").write_text("2\n")
    assert latest_step(exp) == 2  # the tracker names the last complete save, not a newer unfinished one
    with pytest.raises(ValueError, match="step-2 checkpoint has no Hugging Face weights.*export_checkpoint.sh"):
        rl_hf_model(exp)
    (exp / "global_step_2" / "actor" / "huggingface" / "model.safetensors").write_bytes(b"")
    assert rl_hf_model(exp) == exp / "global_step_2" / "actor" / "huggingface"


def test_stale_prompt(tmp_path):
    assert stale_prompt(tmp_path) is None  # no manifest: nothing to say
    (tmp_path / "manifest.json").write_text(json.dumps({"prompt_version": PROMPT_VERSION}))
    assert stale_prompt(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"prompt_version": "gsm8k-v0"}))
    assert "prepared with prompt 'gsm8k-v0'" in stale_prompt(tmp_path) and "--force" in stale_prompt(tmp_path)


def test_check_mlflow(mlflow_uri):
    check_mlflow(mlflow_uri)  # a real server answers /health
    check_mlflow("sqlite:///nowhere.db")  # no server needed
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"MLflow at {nobody} .* is unreachable"):
        check_mlflow(nobody, timeout=2)
