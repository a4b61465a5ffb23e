"""Every code block of the README, CONTRIBUTING.md and the docs runs, so none can go stale.

- ```python blocks run, in order, page by page, each page in a fresh folder that holds the
  project's `studies/` (its storage and cache are its own);
- every `python -m sweeps.VERB ...` line of any other block is parsed by that verb's own
  argument parser: the verb exists and takes those flags (usage lines: `[optional parts]`
  are left out and UPPERCASE placeholders stand for a value);
- a block right after `<!-- not run: why -->` is only read, for a reason given there.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
COMMAND = re.compile(r"python -m (sweeps\.\w+)([^\n#]*)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(=\S*)?$")


def blocks(page: Path) -> list[tuple[int, str, str, bool]]:
    """(line, language, text, runnable) of every fenced block of a page."""
    found, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language, start = match.group(1), match.group(2), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        skipped = start > 0 and lines[start - 1].strip().startswith("<!-- not run:")
        found.append((start + 1, language, "\n".join(body), not skipped))
        i += 1
    return found


def command_lines(text: str) -> list[tuple[str, list[str]]]:
    """(module, arguments) of every `python -m sweeps.X` command in a block."""
    found = []
    text = text.replace("\\\n", " ")  # a command continued over several lines
    for match in COMMAND.finditer(text):
        module, rest = match.group(1), match.group(2)
        rest = re.sub(r"\[[^\]]*\]", " ", rest)  # a usage line's optional parts
        rest = re.split(r"&&|;|\|", rest)[0]
        args = ["1" if PLACEHOLDER.match(token) else token for token in shlex.split(rest)]
        found.append((module, args))
    return found


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_line_is_one_the_command_takes(page):
    checked = 0
    for line, language, text, runnable in blocks(page):
        if language == "python":
            continue
        for module, args in command_lines(text):
            door = importlib.import_module(module)
            assert hasattr(door, "parser"), f"{page_id(page)}:{line}: {module} is not a command"
            try:
                door.parser().parse_args(args)
            except SystemExit as e:
                pytest.fail(f"{page_id(page)}:{line}: python -m {module} {' '.join(args)} is refused ({e})")
            checked += 1
    if page.name in ("README.md", "running.md", "evaluate.md"):
        assert checked, "the page's commands were not found"


PYTHON_PAGES = [p for p in PAGES if any(language == "python" for _, language, _, _ in blocks(p))]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_id)
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPS_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for line, language, text, runnable in blocks(page):
        if language != "python" or not runnable:
            continue
        try:
            exec(compile(text, f"{page_id(page)}:{line}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{page_id(page)}:{line}: {type(e).__name__}: {e}")
        ran += 1

