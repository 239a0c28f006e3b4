"""Moved to `python -m scripts.eval.evaluate`; this spelling keeps working until the next release."""

import runpy
import sys

NEW = "scripts.eval.evaluate"
print(f"notice: scripts/evaluate.py is now `python -m {NEW}` (this spelling goes next release)", file=sys.stderr)
runpy.run_module(NEW, run_name="__main__", alter_sys=True)
