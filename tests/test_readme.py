"""The README and docs/ stay true as the code moves: their links, their `python -m` commands, their repo paths
and the bad-input table in docs/testing.md all name things that exist, and the README stays a front page."""

from __future__ import annotations

import ast
import fnmatch
import importlib.machinery
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "models" / "README.md"]
README_MAX_LINES = 250


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (where a `[x](y)` is not a link)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def test_docs_exist_and_the_readme_is_a_front_page():
    assert {p.name for p in PAGES} >= {"README.md", "testing.md", "operations.md", "rl.md", "evaluation.md"}
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_names_a_file_that_exists(page):
    links = re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text(encoding="utf-8")))
    for target in links:
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        # No anchors: a heading that is reworded or moves to another page breaks them silently.
        assert "#" not in target, f"{page_id(page)}: link {target!r} has an anchor; link the file"
        assert (page.parent / target).exists(), f"{page_id(page)}: link {target!r} names no file"
    if page == REPO / "README.md":
        assert {t for t in links if t.startswith("docs/")} >= {
            f"docs/{p.name}" for p in PAGES if p.parent.name == "docs"
        }, "the README links every docs/ page"


def python_modules(text: str) -> list[str]:
    """Every module a `python -m <module>` command names (any interpreter spelling: .venv/bin/python, python3)."""
    return re.findall(r"\bpython[\w.]*\s+-m\s+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?![.\w<])", text)  # not `x.<name>`


def module_exists(name: str) -> bool:
    """importlib's own finders, one package level at a time, without running any package's __init__ (verl's
    takes seconds to import)."""
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)
    for part in rest:
        if spec is None or spec.submodule_search_locations is None:
            return False
        spec = importlib.machinery.PathFinder.find_spec(f"{spec.name}.{part}", spec.submodule_search_locations)
    return spec is not None


def test_module_exists_uses_the_import_system():
    assert module_exists("scripts.eval.run_all") and module_exists("verl.model_merger")
    assert not module_exists("scripts.rl_launch") and not module_exists("scripts.eval.run_al")
    assert not module_exists("rewards.gsm8k.compute_score")  # a function, not a module


def test_every_python_dash_m_command_names_a_module_that_exists():
    commands = [(page_id(p), m) for p in PAGES for m in python_modules(p.read_text(encoding="utf-8"))]
    assert len(commands) >= 10, commands
    missing = [(page, module) for page, module in commands if not module_exists(module)]
    assert not missing, f"`python -m` of modules that do not exist: {missing}"
    spellings = (
        "`.venv-verl/bin/python -m scripts.bench.eval_backends`, `python -m scripts.eval.<name>`, `python -m\nx`"
    )
    assert python_modules(spellings) == ["scripts.bench.eval_backends", "x"]


# Paths under these folders that the docs name are files of the repo; data/gsm8k/ and models/ are generated.
REPO_DIRS = ("data", "docs", "notebooks", "rewards", "scripts", "services", "tests", "verl_configs", "requirements")


def repo_paths(text: str) -> set[str]:
    """Repo files the text names in code spans or commands: `scripts/rl/launch.py`, `bash scripts/doctor.sh`."""
    pattern = rf"(?<![\w/.-])((?:{'|'.join(REPO_DIRS)})/[\w./-]*\.(?:py|sh|yaml|yml|ipynb|md|in|lock))\b"
    return {p for p in re.findall(pattern, text) if not p.startswith("data/gsm8k/")}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repo_path_the_docs_name_exists(page):
    paths = repo_paths(page.read_text(encoding="utf-8"))
    assert paths or page.name != "rl.md", "no repo paths found in docs/rl.md: the pattern is broken"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"{page_id(page)} names files that do not exist: {missing}"


TABLE = "docs/testing.md, Bad input: what you get"


def bad_input_rows() -> list[str]:
    text = (REPO / "docs" / "testing.md").read_text(encoding="utf-8")
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
            assert path.is_file(), f"{current} ({TABLE}) does not exist"
            if name and not name.endswith(".py"):
                tests = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)]
                assert fnmatch.filter(tests, name), f"{current}::{name} ({TABLE}) does not exist"
