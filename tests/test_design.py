"""The import rules of docs/design.md: each layer imports only the layers below it (module-level and function-level
imports alike, read from the source, so a lazy import cannot hide a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SESEMI = Path(__file__).parents[1] / "sesemi"

LEAVES = ("sesemi.losses", "sesemi.models", "sesemi.datasets")
RECORDS = ("sesemi.rundir", "sesemi.checkpoints", "sesemi.checkpoint_io", "sesemi.errors")
CORE = (
    "sesemi.data",
    "sesemi.module",
    "sesemi.ema",
    "sesemi.metrics",
    "sesemi.callbacks",
    "sesemi.builders",
    "sesemi.checks",
    "sesemi.resume",
    "sesemi.runtime",
    "sesemi.console",
    "sesemi.resolvers",
    "sesemi.schedules",
    "sesemi.loggers",
)
ABOVE_CORE = ("sesemi.cluster", "sesemi.sweep", "sesemi.inference", "sesemi.predict", "sesemi.pseudo_label")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SESEMI.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(node: ast.AST) -> set[str]:
    """Every sesemi module imported anywhere below ``node`` (``from x import y`` counts as x and x.y)."""
    found: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            found |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return {m for m in found if m.startswith("sesemi.")}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _sources() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in SESEMI.rglob("*.py")}


SOURCES = _sources()


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if _within(m, LEAVES)))
def test_leaf_packages_import_only_errors_and_themselves(module: str):
    own = next(p for p in LEAVES if _within(module, (p,)))
    bad = {m for m in _imports(SOURCES[module]) if not _within(m, (own, "sesemi.errors"))}
    assert not bad, f"{module} imports {sorted(bad)}: leaves import only sesemi.errors (docs/design.md)"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if _within(m, RECORDS)))
def test_records_import_only_errors(module: str):
    bad = {m for m in _imports(SOURCES[module]) if not _within(m, ("sesemi.errors", module))}
    assert not bad, f"{module} imports {sorted(bad)} (docs/design.md: records import only sesemi.errors)"


def test_compat_imports_nothing_of_sesemi():
    bad = {
        m: sorted(_imports(tree)) for m, tree in SOURCES.items() if _within(m, ("sesemi.compat",)) and _imports(tree)
    }
    assert not bad, bad


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if _within(m, CORE)))
def test_core_never_imports_where_it_runs(module: str):
    bad = {m for m in _imports(SOURCES[module]) if _within(m, ABOVE_CORE)}
    assert not bad, f"{module} imports {sorted(bad)}: core is handed a Runtime, it does not ask (docs/design.md)"


def test_the_train_function_is_core_and_only_the_entry_point_asks_the_cluster_layer():
    tree = SOURCES["sesemi.train"]
    module_level = {m for stmt in tree.body if isinstance(stmt, (ast.Import, ast.ImportFrom)) for m in _imports(stmt)}
    assert not {m for m in module_level if _within(m, ABOVE_CORE)}
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name in ("train", "_train"):
        assert not {m for m in _imports(functions[name]) if _within(m, ABOVE_CORE)}, name
    assert {m for m in _imports(functions["run_here"]) if _within(m, ("sesemi.cluster",))}


def test_nothing_below_the_sweep_imports_it():
    users = {m for m, tree in SOURCES.items() if any(_within(i, ("sesemi.sweep",)) for i in _imports(tree))}
    assert users <= {m for m in SOURCES if _within(m, ("sesemi.sweep", "sesemi.sweep_report"))}, users


def test_inference_commands_do_not_import_the_training_app():
    """``sesemi.predict``/``sesemi.pseudo_label`` check their arguments without loading the training app (Lightning,
    its callbacks): nothing of theirs imports ``sesemi.train``; the user's ``src/`` is put on the path by
    ``sesemi.workspace``, which imports nothing of sesemi."""
    inference = ("sesemi.inference", "sesemi.predict", "sesemi.pseudo_label")
    users = {m for m, tree in SOURCES.items() if _within(m, inference) and "sesemi.train" in _imports(tree)}
    assert not users, users
    assert not _imports(SOURCES["sesemi.workspace"])
