"""The tiny offline Qwen2 lives in scripts/lib/tiny_model.py (benchmarks use it too); tests import it from here."""

from scripts.lib.tiny_model import FIXTURE, build_tiny_model

__all__ = ["FIXTURE", "build_tiny_model"]
