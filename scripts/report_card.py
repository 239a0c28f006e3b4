"""Moved to `python -m scripts.eval.report_card`; this spelling keeps working until the next release."""

import runpy
import sys

NEW = "scripts.eval.report_card"
print(f"notice: scripts/report_card.py is now `python -m {NEW}` (this spelling goes next release)", file=sys.stderr)
runpy.run_module(NEW, run_name="__main__", alter_sys=True)
