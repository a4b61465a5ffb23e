"""The house drawn from the code: imports run one way, down the data flow, with no cycle and no
import hidden in a function; no function grows past 120 code lines; the package's top shows
its parts. (CONTRIBUTING.md draws the layout these rules keep.)"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "sweeps"
# Each room may import the rooms below it (and its own); the doors at the top, anything.
FLOORS = {"spec": 0, "data": 1, "engine": 2, "store": 3, "sweep": 4, "results": 5, "follow": 6}
TOP = 7
ANYWHERE = {"sweeps", "sweeps.errors"}  # the package's face (__version__) and the one exception type
# The doors (`python -m sweeps.<verb>`) import their work inside `main`, after the arguments are
# read, so that --help and a wrong flag answer at once (tests/cli). Nothing imports a door, so
# such an import cannot hide a cycle; the cycle check below still follows it.
DOORS = {f"sweeps.{verb}" for verb in ("run", "export", "evaluate", "diagnose", "dashboard", "new", "cache")}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FLOORS else "top"


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(sweeps module imported, line, whether inside a function) of one file."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.split(".")[0] == "sweeps":
                for alias in child.names:
                    target = f"{child.module}.{alias.name}"
                    found.append((target if target in known else child.module, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "sweeps":
                        found.append((alias.name, child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def test_imports_run_down_the_data_flow_without_cycles_or_hidden_imports():
    known = modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    wrong = []
    for module, path in known.items():
        for target, line, in_function in imports(path, set(known)):
            where = f"{path.relative_to(SRC.parent)}:{line} imports {target}"
            if in_function and module not in DOORS:
                wrong.append(f"{where} inside a function (a cycle in hiding)")
            if target in DOORS and module not in DOORS:
                wrong.append(f"{where}: a door is imported by nothing")
            if target in ANYWHERE or module == "sweeps":
                continue
            low, high = room(target), room(module)
            if FLOORS.get(low, TOP) > FLOORS.get(high, TOP):
                wrong.append(f"{where}: {high} may not import {low}, a room above it")
            graph[module].add(target)
    assert not wrong, "\n".join(wrong)

    state: dict[str, int] = {}

    def cycle_from(m: str, trail: list[str]) -> list[str] | None:
        state[m] = 1
        for n in graph.get(m, ()):
            if state.get(n) == 1:
                return trail + [m, n]
            if n not in state and (found := cycle_from(n, trail + [m])):
                return found
        state[m] = 2
        return None

    for m in graph:
        if m not in state:
            assert (found := cycle_from(m, [])) is None, f"import cycle: {' -> '.join(found)}"


def code_lines(function: ast.FunctionDef, lines: list[str]) -> int:
    body = function.body
    first = body[0]
    start = first.end_lineno + 1 if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None),
                                                                              ast.Constant) else first.lineno
    return sum(1 for line in lines[start - 1:function.end_lineno] if line.strip() and not line.strip().startswith("#"))


def test_no_function_is_over_120_code_lines():
    long = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node, lines) > 120:
                long.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name}: {code_lines(node, lines)}")
    assert not long, long


def test_the_top_of_the_package_shows_its_parts():
    entries = [p.name for p in SRC.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 20, entries
    assert {"spec", "data", "engine", "store", "sweep", "results"} <= set(entries)


def test_record_is_the_only_writer_of_attrs_and_internals_the_only_reach_into_optuna():
    writes, reaches = [], []
    for path in SRC.rglob("*.py"):
        name = str(path.relative_to(SRC))
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(call in line for call in ("set_user_attr(", "set_trial_user_attr(", "set_study_system_attr(")) \
                    and name not in ("store/record.py", "store/internals.py"):
                writes.append(f"{name}:{number}")
            if any(private in line for private in ("._storage", "._trial_id", "._study_id", "._backend",
                                                   "storages._", "optuna_dashboard._")) \
                    and name != "store/internals.py":
                reaches.append(f"{name}:{number}")
    assert not writes, writes
    assert not reaches, reaches
