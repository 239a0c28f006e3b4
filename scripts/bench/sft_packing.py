"""How much of what the SFT model processes is real tokens: padded vs padding-free vs packed batches.

    python -m scripts.bench.sft_packing                      # fixture + tiny offline model, ~30 s on CPU
    python -m scripts.bench.sft_packing --model Qwen/Qwen2.5-0.5B-Instruct --data-dir data/gsm8k

For each batching mode of notebooks/sft.py it builds the notebook's own SFTTrainer and collates one epoch of
training batches without training. A real token is one of an example's prompt+completion tokens; a processed
token is an element of the collated `input_ids` (padding included). Defaults: the fixture, prepared into a
temporary folder, and a tiny offline Qwen2 (smaller token counts than Qwen's, the same fractions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notebooks import sft
from scripts.lib.tiny_model import FIXTURE, build_tiny_model

if TYPE_CHECKING:
    from trl import SFTTrainer


def measure_batching(trainer: SFTTrainer) -> dict[str, float]:
    """Collate one epoch of the trainer's training batches (no training step): real vs processed tokens."""
    collate, real, processed, batches = trainer.data_collator, 0, 0, 0

    def counting(examples: list[dict[str, Any]]) -> dict[str, Any]:
        nonlocal real
        real += sum(len(e["input_ids"]) for e in examples)  # a packed row is several whole sequences
        return collate(examples)

    trainer.data_collator = counting
    try:
        for batch in trainer.get_train_dataloader():
            processed += batch["input_ids"].numel()
            batches += 1
    finally:
        trainer.data_collator = collate
    return {
        "batches": batches,
        "real_tokens": real,
        "processed_tokens": processed,
        "real_token_fraction": real / processed if processed else float("nan"),
    }


def fixture_data(workdir: Path) -> Path:
    """The fixture laid out as a local GSM8K copy and prepared by data/prepare_gsm8k.py (as tests do)."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    source = workdir / "source"
    source.mkdir()
    for name, part in (("train", rows[:24]), ("test", rows[24:])):
        (source / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    out = workdir / "gsm8k"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "data.prepare_gsm8k",
            "--source",
            str(source),
            "--output-dir",
            str(out),
            "--val-size",
            "4",
            "--seed",
            "0",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    notebook = sft.notebook_parameters()  # the defaults: the notebook's parameters cell
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="HF model dir or hub id (default: a tiny offline Qwen2)")
    parser.add_argument("--data-dir", help="data/prepare_gsm8k.py output (default: the fixture, prepared)")
    parser.add_argument("--batch-size", type=int, default=notebook["per_device_train_batch_size"])
    parser.add_argument("--max-length", type=int, default=notebook["max_length"])
    parser.add_argument("--max-samples", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        workdir = Path(tmp)
        data_dir = Path(args.data_dir) if args.data_dir else fixture_data(workdir)
        if args.model:
            model_path, model_name = args.model, args.model
        else:
            model_path, model_name = str(build_tiny_model(workdir / "tiny-qwen2")), "tiny offline Qwen2, fixture"
        base = sft.SFTRunConfig.from_notebook(
            model_path=model_path,
            data_dir=str(data_dir),
            per_device_train_batch_size=args.batch_size,
            max_length=args.max_length,
            max_samples=args.max_samples,
            run_name="bench",
        )
        files = sft.check_data(base)
        train_dataset, _ = sft.load_sft_datasets(base, files)
        model, tokenizer = sft.load_model(base)
        results = {}
        for mode in reversed(sft.BATCHING):  # padded, padding_free, packed
            cfg = dataclasses.replace(base, batching=mode, output_dir=str(workdir / mode))
            trainer = sft.build_trainer(cfg, model, tokenizer, train_dataset, report_to=())
            results[mode] = measure_batching(trainer)

    print(
        f"\nSFT batches, one epoch of {len(train_dataset)} examples ({model_name}; "
        f"per_device_train_batch_size={args.batch_size}, max_length={args.max_length})\n"
    )
    print(f"{'batching':<14}{'batches':>9}{'real tokens':>13}{'processed':>11}{'real fraction':>15}")
    for mode, r in results.items():
        print(
            f"{mode:<14}{r['batches']:>9}{r['real_tokens']:>13,}{r['processed_tokens']:>11,}"
            f"{r['real_token_fraction']:>15.1%}"
        )
    print(
        "\npadded: each batch is padded to its longest sequence; padding_free: one flattened row per batch; "
        "packed (the notebook's default): best-fit-decreasing rows of max_length, fed padding-free."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
