"""Tools and launchers; `scripts.evaluate` is importable so the SFT notebook and the CLI share one evaluation."""
