"""Core does not import cluster or sweep code: where a run runs is decided by the entry points (sesemi.cluster)
and handed to ``train(cfg, runtime)``."""

from __future__ import annotations

import ast
from pathlib import Path

import sesemi

ROOT = Path(sesemi.__file__).parent
CORE = ["builders.py", "module.py", "runtime.py", "rundir.py", "checkpoint_io.py", "data", "losses", "models",
        "datasets", "callbacks"]  # fmt: skip
OUTSIDE = ("sesemi.cluster", "sesemi.sweep")
# train.py is core except its CLI part: the Hydra entry point asks the cluster layer for the runtime.
ENTRY_FUNCTIONS = {"run_here", "main"}


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
    return found


def _outside(names: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(line, name) for line, name in names if name.startswith(OUTSIDE)]


def test_core_modules_import_no_cluster_or_sweep_code():
    files = [p for entry in CORE for p in ([ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"))]
    bad = {str(p.relative_to(ROOT)): _outside(_imports(ast.parse(p.read_text()))) for p in files}
    assert not {k: v for k, v in bad.items() if v}


def test_train_imports_the_cluster_layer_only_in_its_entry_point():
    tree = ast.parse((ROOT / "train.py").read_text())
    entry = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ENTRY_FUNCTIONS]
    allowed = {line for fn in entry for line, _ in _imports(fn)}
    assert [(line, name) for line, name in _outside(_imports(tree)) if line not in allowed] == []
