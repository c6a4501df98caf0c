"""Reading checkpoints without running code from them.

A ``.ckpt`` is a pickle: ``torch.load(weights_only=False)`` lets a downloaded file run any code on load. A sesemi
checkpoint holds only tensors, dicts, lists, strings and numbers (the state dicts, Lightning's loop, optimizer,
scheduler and callback states, the resolved config, the class names), all of which torch's restricted unpickler
(``weights_only=True``) allows, so the allow-list is torch's own and nothing is added to it. Anything else is
refused with a message that says how to convert a file one trusts.

Resuming (``trainer.fit(ckpt_path=...)``) goes through Lightning, which calls ``torch.load`` with
``weights_only=None``: torch >= 2.6 then restricts the unpickler the same way (``tests/test_checkpoint_safety.py``
checks that a malicious checkpoint given to ``run.resume`` runs nothing).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from sesemi.errors import ConfigError


def load_checkpoint(path: str | os.PathLike, key: str = "checkpoint") -> dict[str, Any]:
    """``torch.load`` of a sesemi/Lightning checkpoint or a state dict, restricted to plain types (CPU tensors).

    ``key`` names the config key the path came from, for the error message.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            key,
            f"{path} holds pickled objects that are not plain weights, which could run code when loaded ({detail})",
            'only if you trust the file, convert it once to plain tensors and load the copy: python -c "import '
            f"torch; c = torch.load('{path}', weights_only=False); keep = ('state_dict', 'sesemi_config', "
            "'sesemi_classes'); torch.save({k: c[k] for k in keep if k in c} if isinstance(c, dict) else "
            "c.state_dict(), 'plain.ckpt')\"",
        ) from None
