"""`python -m scripts.lib.tiny_model [DIR]`: build the tiny offline Qwen2 into DIR (default ./tiny-qwen2)."""

import sys

from scripts.lib.tiny_model import build_tiny_model

print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen2"))
