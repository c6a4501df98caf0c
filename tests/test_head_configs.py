"""sesemi.head_configs: each built-in loss head's config node is its own signature (read from the source, without
importing torch), and the method configs state only what their recipe changes (a default is stated once)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

import sesemi.losses
from sesemi import head_configs

METHODS = Path(__file__).parents[1] / "configs" / "method"


def _signature(cls: type) -> dict:
    """The arguments with defaults that reach the head, as Python sees them (bases included through **kwargs)."""
    found: dict = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.split(".")[0] != "sesemi":
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        for p in params:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            found.setdefault(
                p.name, head_configs.MISSING if p.default is p.empty else head_configs.as_config_value(p.default)
            )
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return found


@pytest.mark.parametrize("name", sorted(head_configs.nodes()))
def test_each_node_is_its_heads_signature(name: str):
    node = head_configs.nodes()[name]
    cls = getattr(sesemi.losses, node["_target_"].rsplit(".", 1)[1])
    assert {k: v for k, v in node.items() if k != "_target_"} == _signature(cls)


@pytest.mark.parametrize("path", sorted(METHODS.glob("*.yaml")), ids=lambda p: p.stem)
def test_method_configs_state_only_what_differs_from_the_heads_defaults(path: Path):
    data = yaml.safe_load(path.read_text())
    pulled = {}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            ((key, option),) = entry.items()
            if key.startswith("loss_head@loss_heads."):
                pulled[key.split(".", 1)[1]] = head_configs.nodes()[option]
    assert pulled, f"{path.name} pulls no loss head from the group {head_configs.GROUP}"
    for head, values in (data.get("loss_heads") or {}).items():
        assert "_target_" not in values, f"{path.name}: {head} names its class again"
        same = {k: v for k, v in values.items() if pulled[head].get(k) == v}
        assert not same, f"{path.name}: {head} restates the head's defaults {same}"
