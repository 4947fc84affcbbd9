"""The benchmarks stand on the package alone: nothing in `bench/` imports from `tests/`."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_bench_imports_nothing_from_tests() -> None:
    files = sorted(BENCH.glob("*.py"))
    assert files, f"no benchmark found in {BENCH}"
    offending = {
        f"{path.name}: {name}"
        for path in files
        for name in _imported(path)
        if name == "tests" or name.startswith("tests.")
    }
    assert offending == set()
