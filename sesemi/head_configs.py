"""The config node of every built-in loss head, made from the head's own ``__init__``: a head's defaults are stated
once, in Python, next to the code that uses them (as USB declares an algorithm's arguments next to it).

A method config pulls a head in by its option of the group ``method/loss_head`` and states only what its recipe
changes::

    defaults:
      - loss_head@loss_heads.fixmatch: fixmatch      # every argument of FixMatchHead, with its default
      - _self_
    loss_heads:
      fixmatch:
        threshold: 0.95                               # the recipe's own value, if it differs

The signatures are read from the source of ``sesemi/losses`` (Python's ``ast``), not by importing the heads: the
CLI composes configs (``--cfg job``, shell completion) without loading torch. A head's arguments are its own and, for
``**kwargs``, those of the sesemi base class it passes them to (``WeakStrongHead``, ``LossHead``); an argument
without a default is ``???`` (to be set). The option's name is the class name without ``Head``, lowercased
(``FixMatchHead`` -> ``fixmatch``, ``CrossEntropyHead`` -> ``crossentropy``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

LOSSES = Path(__file__).parent / "losses"
GROUP = "method/loss_head"
MISSING = "???"


@functools.cache
def _classes() -> dict[str, ast.ClassDef]:
    found = {}
    for path in sorted(LOSSES.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found[node.name] = node
    return found


def _exported() -> list[str]:
    """The heads ``sesemi.losses`` exports (its ``__all__``)."""
    tree = ast.parse((LOSSES / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [name for name in ast.literal_eval(node.value) if name.endswith("Head") and name != "LossHead"]
    return []


def arguments(class_name: str) -> dict[str, Any]:
    """A head's constructor arguments with their defaults (``???`` where it has none), its bases' included."""
    cls = _classes()[class_name]
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    bases = [b.id for b in cls.bases if isinstance(b, ast.Name) and b.id in _classes()]
    if init is None:
        return arguments(bases[0]) if bases else {}
    args = init.args
    positional = args.args[1:]  # without self
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    own: dict[str, Any] = {}
    for arg, default in [*zip(positional, defaults), *zip(args.kwonlyargs, args.kw_defaults)]:
        own[arg.arg] = MISSING if default is None else _value(default)
    inherited = arguments(bases[0]) if args.kwarg is not None and bases else {}
    return {**own, **{k: v for k, v in inherited.items() if k not in own}}


def _value(node: ast.expr) -> Any:
    return as_config_value(ast.literal_eval(node))


def as_config_value(value: Any) -> Any:
    """A Python default as a config holds it: tuples as lists."""
    return [as_config_value(v) for v in value] if isinstance(value, (tuple, list)) else value


def option(class_name: str) -> str:
    return class_name.removesuffix("Head").lower()


def nodes() -> dict[str, dict[str, Any]]:
    """Every exported head's node by option name: its ``_target_`` and its arguments."""
    return {option(name): {"_target_": f"sesemi.losses.{name}", **arguments(name)} for name in _exported()}


def register() -> None:
    """Store the nodes in Hydra's ConfigStore (the group ``method/loss_head``); idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    try:
        stored = set(store.list(GROUP))
    except OSError:  # the group is not there yet
        stored = set()
    for name, node in nodes().items():
        if f"{name}.yaml" not in stored:  # storing again warns on Hydra 1.4
            store.store(group=GROUP, name=name, node=node, provider="sesemi")
