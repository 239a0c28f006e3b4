"""SFT of a chat model on GSM8K with TRL: the logic behind notebooks/sft_training.ipynb, importable and tested.

The notebook reads top to bottom and calls these functions; each one does one step:

    from notebooks import sft
    cfg = sft.SFTRunConfig(model_path="Qwen/Qwen2.5-0.5B-Instruct")   # the notebook's parameters cell
    files = sft.check_data(cfg)                 # missing parquet -> error with the data-prep command
    run = sft.start_mlflow_run(cfg)             # one MLflow run for the whole notebook
    before = sft.evaluate_model(cfg, cfg.model_path, "before")
    model, tokenizer = sft.load_model(cfg)
    trainer = sft.build_trainer(cfg, model, tokenizer, *sft.load_sft_datasets(cfg, files))
    trainer.train(); sft.log_training_summary(trainer)
    sft.save_checkpoint(trainer.model, tokenizer, cfg)
    after = sft.evaluate_model(cfg, cfg.output_path, "after")
    sft.write_manifest(cfg, run.info.run_id, after); sft.end_mlflow_run()

Batching (`batching`): `packed` (default) packs prompt+completion sequences best-fit-decreasing into rows of
`max_length` tokens and feeds them padding-free (TRL `packing=True, packing_strategy="bfd"`): every token the
model processes is a real token. `padding_free` flattens each batch without packing; `padded` is classic
right-padded batches (the baseline the benchmark compares against: scripts/bench_sft_packing.py).
Loss is on the completion only (`completion_only_loss=True`). On a GPU: fp32 master weights with bf16
autocast and FlashAttention-2 when `flash-attn` is installed (else SDPA, which transformers gives a
block-diagonal mask from the packed `position_ids`: correct, slower); on CPU: fp32 and SDPA.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.prompt import PROMPT_VERSION
from rewards.gsm8k import MODES
from scripts.lib import evaluation
from scripts.lib.atomic import atomic_dir, atomic_write
from scripts.lib.mlflow_health import check_mlflow
from scripts.lib.paths import DEFAULT_MODEL, REPO_ROOT, under_repo
from scripts.lib.prompt_check import stale_prompt
from scripts.lib.resilient_mlflow import use_resilient_mlflow

if TYPE_CHECKING:
    import datasets
    import mlflow
    import pandas as pd
    import torch
    from matplotlib.figure import Figure
    from torch.utils.data import DataLoader
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
    """The parquet files SFT needs; raises FileNotFoundError with the data-prep command if any is missing."""
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
    return files


def load_sft_datasets(cfg: SFTRunConfig, files: dict[str, Path]) -> tuple[datasets.Dataset, datasets.Dataset]:
    """sft_train (first `max_samples` rows) and sft_val as TRL conversational prompt-completion datasets."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    def read(path: Path, limit: int | None) -> Dataset:
        rows = pq.read_table(path, columns=["prompt", "completion"]).to_pylist()
        return Dataset.from_list(rows[:limit] if limit is not None else rows)

    return read(files["sft_train"], cfg.max_samples), read(files["sft_val"], None)


def attention_implementation() -> str:
    """FlashAttention-2 on a GPU when flash-attn is installed (packed, padding-free batches run varlen), else SDPA."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    if torch.cuda.is_available():
        if is_flash_attn_2_available():
            return "flash_attention_2"
        logger.warning(
            "flash-attn is not installed: padding-free batches use SDPA with a block-diagonal mask "
            "(correct, but slower); install flash-attn in the image for full speed"
        )
    return "sdpa"


def load_model(cfg: SFTRunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model in fp32 (bf16 autocast on GPU keeps fp32 master weights: 1e-5 updates would vanish in bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    if tokenizer.chat_template is None:
        raise ValueError(f"{cfg.model_path} has no chat template; SFT data is chat-formatted, use an instruct model")
    model = AutoModelForCausalLM.from_pretrained(
        cfg.model_path, dtype=torch.float32, attn_implementation=attention_implementation()
    )
    logger.info(
        "loaded %s: %.0fM parameters, attention %s",
        cfg.model_path,
        model.num_parameters() / 1e6,
        model.config._attn_implementation,
    )
    return model, tokenizer


class TokenCounter:
    """Real (non-pad) tokens vs tokens the model processes in training batches, and real tokens per second.

    The collator wrapper measures each batch as it is built; `consume()` books it when the trainer runs it
    (the dataloader builds one batch ahead), so the rates follow the optimizer steps.
    """

    def __init__(self) -> None:
        self.real = 0
        self.processed = 0
        self._pending: deque[tuple[int, int]] = deque()
        self._last: tuple[int, float] | None = None

    def wrap(self, collator: Any) -> Any:
        def counting_collator(examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = collator(examples)
            # Each example's input_ids are real tokens (a packed row is several whole sequences); the model
            # processes the collated tensor, padding included.
            self._pending.append((sum(len(ex["input_ids"]) for ex in examples), batch["input_ids"].numel()))
            return batch

        return counting_collator

    def consume(self) -> None:
        if self._last is None:
            self._last = (0, time.perf_counter())
        if self._pending:
            real, processed = self._pending.popleft()
            self.real += real
            self.processed += processed

    @property
    def fraction(self) -> float:
        return self.real / self.processed if self.processed else float("nan")

    def snapshot(self) -> dict[str, float]:
        """Cumulative real-token fraction, and real tokens/s since the previous snapshot."""
        now = time.perf_counter()
        last_real, last_time = self._last or (0, now)
        rate = (self.real - last_real) / (now - last_time) if now > last_time else 0.0
        self._last = (self.real, now)
        return {"real_token_fraction": self.fraction, "tokens_per_second": rate}


def _trainer_class() -> type[SFTTrainer]:
    from trl import SFTTrainer

    class TrackedSFTTrainer(SFTTrainer):
        """SFTTrainer whose training batches are counted; training logs gain `real_token_fraction` and
        `tokens_per_second`, so every reporter (MLflow, the notebook's log history) sees them."""

        token_counter: TokenCounter

        def get_train_dataloader(self) -> DataLoader:
            collator = self.data_collator
            self.data_collator = self.token_counter.wrap(collator)  # training batches only, not eval
            try:
                return super().get_train_dataloader()
            finally:
                self.data_collator = collator

        def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            self.token_counter.consume()
            return super().training_step(*args, **kwargs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:
                logs.update(self.token_counter.snapshot())
            super().log(logs, start_time)

    return TrackedSFTTrainer


def build_trainer(
    cfg: SFTRunConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: datasets.Dataset,
    eval_dataset: datasets.Dataset | None = None,
    report_to: tuple[str, ...] = ("mlflow",),
) -> SFTTrainer:
    """A TRL SFTTrainer for `cfg`; `trainer.token_counter` measures the real-token fraction of training batches.

    With `report_to=("mlflow",)`, transformers' MLflowCallback logs into the run `start_mlflow_run` opened (it
    starts its own run only when none is active) and leaves ending it to us; scripts/lib/resilient_mlflow.py's
    version of it, which keeps training through an MLflow outage and sends the metrics once the server is back.
    """
    import torch
    from trl import SFTConfig

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
        dataloader_num_workers=0,  # the token counter runs in the collator, in this process
        dataloader_pin_memory=cuda,
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )
    trainer.token_counter = TokenCounter()
    use_resilient_mlflow(trainer)  # training outlives an MLflow outage; params without secrets
    return trainer


def measure_batching(trainer: SFTTrainer) -> dict[str, float]:
    """Build one epoch of the trainer's training batches (no training step): real vs processed tokens."""
    counter = trainer.token_counter = TokenCounter()
    batches = 0
    for _ in trainer.get_train_dataloader():
        counter.consume()
        batches += 1
    return {
        "batches": batches,
        "real_tokens": counter.real,
        "processed_tokens": counter.processed,
        "real_token_fraction": counter.fraction,
    }


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
        seed=cfg.seed,
    )
    if mlflow.active_run() is not None:
        evaluation.log_to_mlflow(result, f"val_{stage}")
    return result


def log_training_summary(trainer: SFTTrainer) -> dict[str, float]:
    """Real-token fraction, real tokens/s, final loss and peak GPU memory of the finished run, logged to MLflow."""
    import mlflow
    import torch

    state = trainer.state
    runtime = next((h["train_runtime"] for h in reversed(state.log_history) if "train_runtime" in h), float("nan"))
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    counter: TokenCounter = trainer.token_counter
    summary = {
        "train_steps": float(state.global_step),
        "train_real_tokens": float(counter.real),
        "train_real_token_fraction": counter.fraction,
        "train_tokens_per_second": counter.real / runtime if runtime and runtime > 0 else float("nan"),
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


def manifest_model_path(path: Path) -> str:
    """The manifest's `path`: relative to the repo root when inside it (valid in every container), else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT.resolve()))
    except ValueError:
        return str(path)


def write_manifest(cfg: SFTRunConfig, run_id: str, after: evaluation.EvalResult) -> dict[str, Any]:
    """Atomically write the manifest scripts/run_ppo.sh reads (default models/sft/latest.json)."""
    manifest = {
        "path": manifest_model_path(cfg.output_path),
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

    rows = [
        {
            "question": b["question"],
            "answer": b["ground_truth"],
            "before": b["response"],
            "before_strict_ok": b["correct_strict"],
            "after": a["response"],
            "after_strict_ok": a["correct_strict"],
        }
        for b, a in zip(before.samples[:k], after.samples[:k], strict=True)
    ]
    return pd.DataFrame(rows)


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
