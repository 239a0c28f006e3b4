"""The SFT notebook's importable, tested logic lives in `notebooks.sft`."""
