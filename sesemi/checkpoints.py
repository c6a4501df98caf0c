"""Reading checkpoints without running code from them, and comparing their weights with a model's.

A ``.ckpt`` is a pickle: ``torch.load(weights_only=False)`` lets a downloaded file run any code on load. A sesemi
checkpoint holds only tensors, dicts, lists, strings and numbers (the state dicts, Lightning's loop, optimizer,
scheduler and callback states, the resolved config, the class names), all of which torch's restricted unpickler
(``weights_only=True``) allows, so the allow-list is torch's own and nothing is added to it. Anything else is
refused with a message that says how to convert a file one trusts. A file that is no checkpoint at all (empty, cut
off by a kill during a save, another format) is one error naming the config key, never a bare ``EOFError``.

Resuming (``trainer.fit(ckpt_path=...)``) goes through Lightning, which calls ``torch.load`` with
``weights_only=None``: torch >= 2.6 then restricts the unpickler the same way (``tests/test_checkpoint_safety.py``
checks that a malicious checkpoint given to ``run.resume`` runs nothing).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sesemi.errors import ConfigError, override

SIBLINGS = ("best.ckpt", "last.ckpt")  # where a run keeps its checkpoints, in the order a fix suggests them
SHOWN = 3  # keys named per kind of mismatch


def load_checkpoint(path: str | os.PathLike, key: str = "checkpoint") -> dict[str, Any]:
    """``torch.load`` of a sesemi/Lightning checkpoint or a state dict, restricted to plain types (CPU tensors).

    ``key`` names the config key the path came from, for the error message.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # no class or function was refused: the bytes are no pickle at all
            raise _unreadable(path, key, err) from None
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            key,
            f"{path} holds pickled objects that are not plain weights, which could run code when loaded ({detail})",
            'only if you trust the file, convert it once to plain tensors and load the copy: python -c "import '
            f"torch; c = torch.load('{path}', weights_only=False); keep = ('state_dict', 'sesemi_config', "
            "'sesemi_classes'); torch.save({k: c[k] for k in keep if k in c} if isinstance(c, dict) else "
            "c.state_dict(), 'plain.ckpt')\"",
        ) from None
    except Exception as err:  # noqa: BLE001  (empty, truncated, another format: whatever torch and pickle raise)
        raise _unreadable(path, key, err) from None


def _unreadable(path: str | os.PathLike, key: str, err: BaseException) -> ConfigError:
    """The error for a file that is no checkpoint, with a pasteable fix: another checkpoint of its run if any."""
    size = Path(path).stat().st_size if Path(path).is_file() else None
    why = "it is empty (0 bytes)" if size == 0 else f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
    other = _other_checkpoint(Path(path))
    fix = (
        f"give another checkpoint of the run: {override(key, str(other))}"
        if other is not None
        else f"give {key} a checkpoint written by python -m sesemi.train (a run's checkpoints/best.ckpt)"
    )
    return ConfigError(key, f"cannot load {path}: {why}; a save cut off by a kill, or not a checkpoint", fix)


def _other_checkpoint(path: Path) -> Path | None:
    for name in SIBLINGS:
        other = path.parent / name
        if other.name != path.name and other.is_file() and other.stat().st_size > 0:
            return other
    return None


Shape = tuple[int, ...] | None  # None: a value that is no tensor (a module's extra state)


@dataclass(frozen=True)
class Mismatch:
    """How the weights of a file (``given``) differ from a model's state dict (``expected``), key by key."""

    missing: list[str]  # in the model, not in the file
    unexpected: list[str]  # in the file, not in the model
    reshaped: dict[str, tuple[Shape, Shape]]  # in both, of another shape: key -> (in the file, in the model)

    @classmethod
    def of(cls, expected: Mapping[str, Any], given: Mapping[str, Any]) -> Mismatch:
        shapes = {k: (_shape(given[k]), _shape(expected[k])) for k in expected if k in given}
        return cls(
            missing=[k for k in expected if k not in given],
            unexpected=[k for k in given if k not in expected],
            reshaped={k: pair for k, pair in shapes.items() if pair[0] != pair[1]},
        )

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.reshaped)

    def describe(self, given: int) -> str:
        """One line naming a few keys of each kind of mismatch, for a file of ``given`` weights."""
        parts = [f"none of its {given} weights has a name the model has"] if len(self.unexpected) == given else []
        reshaped = [f"{k}: {a} in the file, {b} in the model" for k, (a, b) in self.reshaped.items()]
        for what, keys in (
            ("of another shape", reshaped),
            ("missing from the file", self.missing),
            ("not in the model", self.unexpected),
        ):
            if keys:
                more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
                parts.append(f"{len(keys)} {what} ({'; '.join(keys[:SHOWN])}{more})")
        return ", ".join(parts)


def _shape(value: Any) -> Shape:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else None
