"""kill -9 leaves nothing half-written: data prep, the notebook's save path, export and evaluation.

Each writer runs as its real command in its own process group and is SIGKILLed at two points: as soon as its
temporary copy appears beside the destination, and with everything written but not yet swapped in (a
sitecustomize.py on PYTHONPATH holds `scripts.lib.atomic._swap` there). The destination must then be absent or
the previous complete version, byte for byte, and a rerun must complete and clear the killed writer's temp copy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SITECUSTOMIZE = """
import os
if os.environ.get("KILL9_MARKER"):
    import pathlib, time
    from scripts.lib import atomic
    swap = atomic._swap
    def paused(tmp, path):
        if pathlib.Path(path).name == os.environ["KILL9_NAME"]:
            pathlib.Path(os.environ["KILL9_MARKER"]).write_text(str(tmp))
            time.sleep(600)
        return swap(tmp, path)
    atomic._swap = paused
"""


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under `path` (or `path` itself) with its bytes; None when it does not exist."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def temp_copies(dest: Path) -> list[str]:
    return [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.") and p.name.endswith(".tmp")]


@pytest.fixture
def run_killed(tmp_path):
    """run_killed(cmd, dest, at) starts `cmd`, SIGKILLs its process group at `at` ("temp": the temp copy of
    `dest` appeared; "swap": all written, about to be swapped in; any other string: the command logged it), and
    returns whether the kill landed there."""
    hooks = tmp_path / "kill9-hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)

    def run(cmd: list[str], dest: Path, at: str, env: dict[str, str] | None = None) -> bool:
        marker = tmp_path / f"kill9-marker-{time.monotonic_ns()}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        if at == "swap":
            env |= {"KILL9_MARKER": str(marker), "KILL9_NAME": dest.name}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")]))
        log = marker.with_suffix(".log").open("w+")  # a file, not a pipe: a chatty child never blocks on it
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log
        )

        def reached() -> bool:
            if at == "swap":
                return marker.exists()
            if at == "temp":
                return dest.parent.is_dir() and bool(temp_copies(dest))
            return at in Path(log.name).read_text(errors="replace")  # a line the command logs

        deadline, landed = time.monotonic() + 240, False
        while time.monotonic() < deadline and proc.poll() is None and not (landed := reached()):
            time.sleep(0.001)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        gone = time.monotonic() + 30  # the children die too (a rerun seconds later finds them dead)
        while time.monotonic() < gone:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        log.seek(0)
        stderr = log.read()
        log.close()
        assert landed or proc.returncode == 0, f"{cmd} failed before the kill point:\n{stderr[-3000:]}"
        if at != "temp":  # a temp copy may live too briefly to be seen; the other points are always reached
            assert landed, f"{cmd} never reached {at!r} ({dest}):\n{stderr[-3000:]}"
        return landed

    return run


@pytest.mark.slow
def test_data_prep(run_killed, gsm8k_source_dir, tmp_path):
    out = tmp_path / "gsm8k"
    prep = [sys.executable, "data/prepare_gsm8k.py", "--source", str(gsm8k_source_dir), "--output-dir", str(out)]
    run_killed([*prep, "--val-size", "4"], out, "swap")
    assert not out.exists()  # the first run never finished: nothing there, not a half folder
    assert subprocess.run([*prep, "--val-size", "4"], cwd=REPO_ROOT, capture_output=True).returncode == 0
    previous = snapshot(out)
    for at in ("validated", "temp", "swap"):  # read and checked, nothing written yet; writing; all written
        run_killed([*prep, "--val-size", "6", "--force"], out, at)
        assert snapshot(out) == previous or (at == "temp" and _complete_prep(out, 6))  # old, or a late kill: new
    assert subprocess.run([*prep, "--val-size", "6"], cwd=REPO_ROOT, capture_output=True).returncode == 0
    assert _complete_prep(out, 6) and temp_copies(out) == []


def _complete_prep(out: Path, val_size: int) -> bool:
    """The folder is one whole run of data prep with `val_size`: its manifest's hashes match every file."""
    import hashlib

    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["val_size"] == val_size and all(
        hashlib.sha256((out / name).read_bytes()).hexdigest() == digest for name, digest in manifest["sha256"].items()
    )


SAVE = """
import sys
from scripts.eval import evaluation
from notebooks import sft
cfg = sft.SFTRunConfig.from_notebook(
    model_path=sys.argv[1], output_dir=sys.argv[2], manifest_path=sys.argv[3], run_name="k9"
)
model, tokenizer = sft.load_model(cfg)
sft.save_checkpoint(model, tokenizer, cfg)
after = evaluation.score([evaluation.Problem(0, "q", "5", [])], ["#### 5"])
sft.write_manifest(cfg, sys.argv[4], after)
"""


@pytest.mark.slow
@pytest.mark.parametrize("at", ["swap", "temp"])
def test_notebook_save_path(run_killed, tiny_model_dir, tmp_path, at):
    out, manifest = tmp_path / "models" / "sft" / "k9", tmp_path / "models" / "sft" / "latest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"path": "models/sft/previous"}\n')  # a previous run's manifest
    save = [sys.executable, "-c", SAVE, str(tiny_model_dir), str(out), str(manifest)]
    run_killed([*save, "run-1"], out, at)
    assert snapshot(out) is None or (at == "temp" and (out / "model.safetensors").is_file())  # late kill: whole
    assert manifest.read_text() == '{"path": "models/sft/previous"}\n'
    shutil.rmtree(out, ignore_errors=True)
    run_killed([*save, "run-2"], manifest, "swap")  # the model is saved; killed before the manifest's swap
    assert manifest.read_text() == '{"path": "models/sft/previous"}\n'
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"
    shutil.rmtree(out)
    assert subprocess.run([*save, "run-3"], cwd=REPO_ROOT, capture_output=True).returncode == 0
    assert json.loads(manifest.read_text())["mlflow_run_id"] == "run-3"
    assert temp_copies(out) == [] and temp_copies(manifest) == []


@pytest.mark.slow
def test_evaluate(run_killed, tiny_model_dir, gsm8k_data_dir, tmp_path):
    out = tmp_path / "val.json"
    evaluate = [
        sys.executable,
        "scripts/eval/evaluate.py",
        "--model",
        str(tiny_model_dir),
        "--backend",
        "hf",
        "--max-new-tokens",
        "4",
        "--data",
        str(gsm8k_data_dir / "val.parquet"),
        "--output",
        str(out),
    ]
    assert subprocess.run([*evaluate, "--limit", "1"], cwd=REPO_ROOT, capture_output=True).returncode == 0
    previous = out.read_bytes()
    for at in ("generate (", "swap"):  # while generating (tqdm's bar); all written, about to replace the old
        run_killed([*evaluate, "--limit", "2"], out, at)
        assert out.read_bytes() == previous
    assert subprocess.run([*evaluate, "--limit", "2"], cwd=REPO_ROOT, capture_output=True).returncode == 0
    assert json.loads(out.read_text())["n"] == 2 and temp_copies(out) == []


@pytest.mark.slow
def test_export_checkpoint(run_killed, tiny_model_dir, tmp_path):
    from tests.test_verl_export import write_fsdp_checkpoint

    actor = tmp_path / "rl" / "ppo-k9" / "global_step_1" / "actor"
    write_fsdp_checkpoint(tiny_model_dir, actor)
    hf_dir = actor / "huggingface"  # config + tokenizer, no weights: the merge replaces this folder
    previous = snapshot(hf_dir)
    export = ["bash", "scripts/export_checkpoint.sh", str(actor)]
    env = {"PYTHON": sys.executable}
    for at in ("swap", "temp"):
        run_killed(export, hf_dir, at, env)
        assert snapshot(hf_dir) == previous or (at == "temp" and list(hf_dir.glob("*.safetensors")))
    assert subprocess.run(export, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True).returncode == 0
    assert list(hf_dir.glob("*.safetensors")) and temp_copies(hf_dir) == []

    target = tmp_path / "export"  # a copy elsewhere: absent until whole
    run_killed([*export, str(target)], target, "swap", env)
    assert not target.exists()
    assert subprocess.run([*export, str(target)], cwd=REPO_ROOT, env={**os.environ, **env}).returncode == 0
    assert snapshot(target) == snapshot(hf_dir) and temp_copies(target) == []
