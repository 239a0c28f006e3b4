"""SFT of a chat model on GSM8K with TRL: the tested logic behind notebooks/sft_training.ipynb, one step a function.

Batching (`batching`): `packed` (default: TRL best-fit-decreasing packing fed padding-free), `padding_free`, or
`padded` (the baseline scripts/bench_sft_packing.py measures against). Loss on the completion only. GPU: fp32
master weights, bf16 autocast, FlashAttention-2 when installed (else SDPA); CPU: fp32 and SDPA.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.prompt import PROMPT_VERSION
from rewards.gsm8k import MODES
from scripts.lib import evaluation
from scripts.lib.atomic import atomic_dir, atomic_write
from scripts.lib.checkpoints import check_model
from scripts.lib.mlflow_health import check_mlflow
from scripts.lib.paths import DEFAULT_MODEL, REPO_ROOT, display_path, under_repo
from scripts.lib.prompt_check import stale_prompt
from scripts.lib.resilient_mlflow import use_resilient_mlflow

if TYPE_CHECKING:
    import datasets
    import mlflow
    import pandas as pd
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import SFTTrainer

logger = logging.getLogger(__name__)

BATCHING = ("packed", "padding_free", "padded")
DATA_FILES = {"sft_train": "sft_train.parquet", "sft_val": "sft_val.parquet", "val": "val.parquet"}


@dataclass
class SFTRunConfig:
    """Every knob of one SFT run. Defaults are the real run on one H100 (the notebook's parameters cell)."""

    model_path: str = DEFAULT_MODEL
    data_dir: str = "data/gsm8k"  # relative paths are under the repo root
    output_dir: str | None = None  # None: models/sft/<run_name>
    manifest_path: str = "models/sft/latest.json"  # what scripts/run_ppo.sh reads
    num_train_epochs: float = 3.0
    max_steps: int = -1  # -1: run num_train_epochs
    learning_rate: float = 1e-5
    per_device_train_batch_size: int = 8  # packed rows of max_length tokens (~32 problems per step)
    gradient_accumulation_steps: int = 1
    max_length: int = 1024  # a GSM8K prompt + solution is a few hundred tokens: none is truncated
    batching: str = "packed"
    gradient_checkpointing: bool = False  # 0.5B fits in 80 GB without it; it would cost ~25% speed
    warmup_ratio: float = 0.03
    logging_steps: int = 10
    max_samples: int | None = None  # None: all of sft_train
    eval_samples: int = 512  # val problems evaluated before and after (512 = the whole val split)
    eval_max_new_tokens: int = evaluation.DEFAULT_MAX_NEW_TOKENS
    eval_batch_size: int = 64
    eval_backend: str = "hf"  # the training process holds the GPU: transformers generate, not a vLLM engine
    mlflow_experiment: str = "gsm8k-sft"
    run_name: str | None = None  # None: sft-<UTC timestamp>
    seed: int = 42
    system_metrics_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.batching not in BATCHING:
            raise ValueError(f"batching={self.batching!r}; choose one of {', '.join(BATCHING)}")
        if self.eval_backend not in evaluation.BACKENDS:
            raise ValueError(f"eval_backend={self.eval_backend!r}; choose one of {', '.join(evaluation.BACKENDS)}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set num_train_epochs > 0 or max_steps > 0")
        if self.run_name is None:
            self.run_name = "sft-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")

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


def check_data(cfg: SFTRunConfig) -> dict[str, Path]:
    """The parquet files SFT needs; raises FileNotFoundError with the data-prep command if any is missing.

    Also checks `model_path` (a model folder, or a hub id that can load), so a typo stops here, not minutes later.
    """
    files = {name: cfg.data_path / filename for name, filename in DATA_FILES.items()}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"GSM8K data is missing in {cfg.data_path}: {', '.join(missing)}.\n"
            "Prepare it once (downloads openai/gsm8k into the shared HF cache), e.g. in a JupyterLab terminal "
            "(File > New > Terminal), then run this notebook again:\n\n"
            f"    python {REPO_ROOT / 'data' / 'prepare_gsm8k.py'} --output-dir {cfg.data_path}\n"
        )
    stale = stale_prompt(cfg.data_path)
    if stale:
        raise ValueError(stale)
    check_model(cfg.model_path)
    return files


def load_sft_datasets(cfg: SFTRunConfig, files: dict[str, Path]) -> tuple[datasets.Dataset, datasets.Dataset]:
    """sft_train (first `max_samples` rows) and sft_val as TRL conversational prompt-completion datasets."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    def read(path: Path, limit: int | None) -> Dataset:
        rows = pq.read_table(path, columns=["prompt", "completion"]).to_pylist()
        return Dataset.from_list(rows[:limit] if limit is not None else rows)

    return read(files["sft_train"], cfg.max_samples), read(files["sft_val"], None)


def load_model(cfg: SFTRunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model in fp32 (bf16 autocast on GPU keeps fp32 master weights: 1e-5 updates would vanish in bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import is_flash_attn_2_available

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    if tokenizer.chat_template is None:
        raise ValueError(f"{cfg.model_path} has no chat template; SFT data is chat-formatted, use an instruct model")
    attention = "sdpa"
    if torch.cuda.is_available() and is_flash_attn_2_available():
        attention = "flash_attention_2"  # packed, padding-free batches run its variable-length kernel
    elif torch.cuda.is_available():
        logger.warning("flash-attn is not installed: SDPA with a block-diagonal mask (correct, slower)")
    model = AutoModelForCausalLM.from_pretrained(cfg.model_path, dtype=torch.float32, attn_implementation=attention)
    logger.info(
        "loaded %s: %.0fM parameters, attention %s",
        cfg.model_path,
        model.num_parameters() / 1e6,
        model.config._attn_implementation,
    )
    return model, tokenizer


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
        gradient_checkpointing=cfg.gradient_checkpointing,  # TRL defaults to True; see SFTRunConfig
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
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=tokenizer
    )
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
    """Greedy accuracy on the first `eval_samples` val problems (scripts/evaluate.py), logged as `val_<stage>/`."""
    import mlflow

    result = evaluation.evaluate(
        model,
        cfg.data_path / DATA_FILES["val"],
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

    Saved in bf16 on GPU (what vLLM and verl load; the base model ships in bf16), fp32 on CPU.
    """
    import torch

    out = check_output_dir(cfg)
    if torch.cuda.is_available():
        model = model.to(torch.bfloat16)
    with atomic_dir(out) as tmp:
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
        "mlflow_run_id": run_id,
        "eval_accuracy": {mode: after.accuracy[mode] for mode in MODES},
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
    """Val accuracy before and after SFT, per reward mode, with 95% Wilson intervals."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    width = 0.38
    for offset, (label, result) in zip((-width / 2, width / 2), (("before", before), ("after", after)), strict=True):
        acc = [result.accuracy[m] for m in MODES]
        err = [
            [a - result.ci95[m][0] for a, m in zip(acc, MODES, strict=True)],
            [result.ci95[m][1] - a for a, m in zip(acc, MODES, strict=True)],
        ]
        bars = ax.bar([i + offset for i in range(len(MODES))], acc, width, yerr=err, capsize=4, label=label)
        ax.bar_label(bars, labels=[f"{a:.1%}" for a in acc], padding=2)
    ax.set_xticks(range(len(MODES)), [f"{m} reward" for m in MODES])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"val accuracy (n={after.n})")
    ax.set_title("GSM8K val accuracy, greedy, 95% CI")
    ax.legend()
    fig.tight_layout()
    return fig


def side_by_side(before: evaluation.EvalResult, after: evaluation.EvalResult, k: int = 5) -> pd.DataFrame:
    """The first `k` val problems: answer, and the response before and after SFT."""
    import pandas as pd

    b, a = pd.DataFrame(before.samples[:k]), pd.DataFrame(after.samples[:k])
    return pd.DataFrame({"question": b["question"], "answer": b["ground_truth"], "before": b["response"],
                         "before_strict_ok": b["correct_strict"], "after": a["response"],
                         "after_strict_ok": a["correct_strict"]})  # fmt: skip


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
