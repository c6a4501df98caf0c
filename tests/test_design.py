"""The import rules of docs/design.md: each layer imports only the layers below it, and the import picture of the
package has no cycle (module-level and function-level imports alike, read from the source, so a lazy import cannot
hide a dependency; imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and there are none)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SESEMI = Path(__file__).parents[1] / "sesemi"

LEAVES = ("sesemi.losses", "sesemi.models", "sesemi.datasets")
RECORDS = (
    "sesemi.errors",
    "sesemi.atomic",
    "sesemi.rundir",
    "sesemi.sweepdir",
    "sesemi.checkpoints",
    "sesemi.checkpoint_io",
)
BASE = ("sesemi.compat", "sesemi.workspace")  # import nothing of sesemi
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
    "sesemi.bookkeeping",
    "sesemi.training",
    "sesemi.composition",
    "sesemi.head_configs",
)
CLUSTER = ("sesemi.cluster",)
SWEEP = ("sesemi.sweep",)
INFERENCE = ("sesemi.inference",)
# The commands: nothing of the package imports them.
ENTRIES = ("sesemi.train", "sesemi.predict", "sesemi.pseudo_label", "sesemi.status", "sesemi.sweep_report")

# What each layer may import (besides itself): the layers below it.
ALLOWED = {
    LEAVES: ("sesemi.errors",),
    RECORDS: ("sesemi.errors", "sesemi.atomic"),
    CORE: (*LEAVES, *RECORDS, *BASE, *CORE),
    CLUSTER: (*LEAVES, *RECORDS, *BASE, *CORE),
    SWEEP: (*LEAVES, *RECORDS, *BASE, *CORE, *CLUSTER),
    INFERENCE: (*LEAVES, *RECORDS, *BASE, *CORE),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SESEMI.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def _imports(node: ast.AST) -> set[str]:
    """Every sesemi module imported anywhere below ``node`` (``from x import y`` counts as x and x.y)."""
    skip = _type_checking_blocks(node)
    found: set[str] = set()
    for n in ast.walk(node):
        if id(n) in skip:
            continue
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            found |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return {m for m in found if m.startswith("sesemi.")}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


SOURCES = {_module_name(p): ast.parse(p.read_text()) for p in SESEMI.rglob("*.py")}


def _modules_imported(module: str) -> set[str]:
    """The sesemi modules ``module`` imports: ``from pkg import sub`` of a submodule counts as ``pkg.sub`` only."""
    tree = SOURCES[module]
    skip = _type_checking_blocks(tree)
    found: set[str] = set()
    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            subs = {f"{n.module}.{a.name}" for a in n.names} & SOURCES.keys()
            found |= subs if len(subs) == len(n.names) else {n.module, *subs}
    return {m for m in found if m in SOURCES and m != module}


def _layer(module: str) -> tuple[str, ...] | None:
    return next((layer for layer in ALLOWED if _within(module, layer)), None)


def test_every_module_has_a_layer():
    lost = sorted(m for m in SOURCES if m != "sesemi" and _layer(m) is None and not _within(m, (*BASE, *ENTRIES)))
    assert not lost, f"{lost}: place them in a layer of docs/design.md (and here)"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if _layer(m) is not None))
def test_each_layer_imports_only_the_layers_below(module: str):
    layer = _layer(module)
    assert layer is not None
    bad = {m for m in _imports(SOURCES[module]) if not _within(m, (*ALLOWED[layer], module))}
    if layer == LEAVES:  # a leaf package imports itself, and sesemi.errors
        own = next(p for p in LEAVES if _within(module, (p,)))
        bad = {m for m in bad if not _within(m, (own,))}
    if layer in (CLUSTER, SWEEP, INFERENCE):
        bad = {m for m in bad if not _within(m, layer)}
    assert not bad, f"{module} imports {sorted(bad)} (docs/design.md: {layer} import only {ALLOWED[layer]})"


def test_base_modules_import_nothing_of_sesemi():
    bad = {m: sorted(_imports(SOURCES[m])) for m in SOURCES if _within(m, BASE) and _imports(SOURCES[m])}
    assert not bad, bad


def test_nothing_imports_a_command():
    users = {
        m: sorted(i for i in _imports(tree) if _within(i, ENTRIES))
        for m, tree in SOURCES.items()
        if not _within(m, ENTRIES) and any(_within(i, ENTRIES) for i in _imports(tree))
    }
    assert not users, users


def test_the_import_picture_has_no_cycle():
    """Depth-first over module -> imported modules; a back edge is a cycle (named, to be broken)."""
    graph = {m: _modules_imported(m) for m in SOURCES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, cycles


def test_the_training_app_is_the_one_door_and_train_is_core():
    """``sesemi.train`` (the Hydra entry) asks the cluster layer for the runtime; the core ``train()`` lives in
    ``sesemi.training`` and knows nothing of where it runs."""
    entry = SOURCES["sesemi.train"]
    functions = {f.name: f for f in entry.body if isinstance(f, ast.FunctionDef)}
    assert "sesemi.cluster.environment" in _imports(functions["train_here"])
    module_level = {m for stmt in entry.body if isinstance(stmt, (ast.Import, ast.ImportFrom)) for m in _imports(stmt)}
    assert not {m for m in module_level if _within(m, (*CLUSTER, *SWEEP))}  # the CLI starts without them


def test_inference_commands_do_not_import_the_training_app():
    """``sesemi.predict``/``sesemi.pseudo_label`` check their arguments without loading the training app (Lightning,
    its callbacks): nothing of theirs imports ``sesemi.train``; the user's ``src/`` is put on the path by
    ``sesemi.workspace``, which imports nothing of sesemi."""
    inference = ("sesemi.inference", "sesemi.predict", "sesemi.pseudo_label")
    users = {m for m, tree in SOURCES.items() if _within(m, inference) and "sesemi.train" in _imports(tree)}
    assert not users, users
