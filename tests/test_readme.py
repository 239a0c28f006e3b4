"""The README's bad-input table is backed by tests: every test it names exists, so a row cannot outlive its test."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bad_input_rows() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Bad input: what you get", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [row for row in rows if not row.startswith(("| input", "| ---"))]


def test_every_bad_input_row_names_tests_that_exist():
    rows = bad_input_rows()
    assert len(rows) >= 15
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        refs = re.findall(r"`(test_\w+\.py)?(?:::)?([\w*]+)?`", cell)
        assert refs, f"row names no test: {row}"
        current = None
        for file, name in refs:
            current = file or current
            path = REPO / "tests" / current
            assert path.is_file(), f"{current} (README bad-input table) does not exist"
            if name and not name.endswith(".py"):
                tests = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)]
                assert fnmatch.filter(tests, name), f"{current}::{name} (README bad-input table) does not exist"
