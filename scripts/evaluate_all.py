"""Moved to `python -m scripts.eval.run_all`; this spelling keeps working until the next release."""

import runpy
import sys

NEW = "scripts.eval.run_all"
print(f"notice: scripts/evaluate_all.py is now `python -m {NEW}` (this spelling goes next release)", file=sys.stderr)
runpy.run_module(NEW, run_name="__main__", alter_sys=True)
