"""Benchmarks `make bench` prints: `reward` (vs verl's scorer), `sft_packing`, `eval_backends` (vLLM vs HF)."""
