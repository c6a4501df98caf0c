"""Pretrained weights for backbones: read a local weights file, load it into a backbone whatever its key prefix, and
adapt the stem convolution to another number of input channels. Shared by the torchvision and timm backbones."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["adapt_conv_weight", "load_backbone_state_dict", "load_weights_file", "set_input_channels"]

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params")


def adapt_conv_weight(weight: Tensor, in_channels: int, pretrained: bool = True) -> Tensor:
    """Adapt a conv weight ``[out, C, kh, kw]`` to ``in_channels`` input channels.

    Pretrained weights: summed over the C channels for ``in_channels == 1``, so a grayscale image gives exactly the
    activations the pretrained filters give that image repeated over C channels (averaging would scale them by 1/C
    and put every later layer's pretrained statistics off); otherwise cycled through the C channels and rescaled by
    ``C / in_channels`` to keep the activation scale. Both are timm's rules (``adapt_input_conv``).
    Randomly initialized weights are only cycled (slicing keeps the initializer's distribution).
    """
    c = weight.shape[1]
    if in_channels == c:
        return weight
    if pretrained and in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels, device=weight.device) % c
    out = weight.index_select(1, index)
    if pretrained:
        out = out * (c / in_channels)
    return out.contiguous()


def _first_conv(model: nn.Module, channels: int = 3) -> tuple[str, nn.Conv2d] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == channels:
            return name, module
    return None


def _set_submodule(root: nn.Module, dotted_name: str, new: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def set_input_channels(model: nn.Module, in_channels: int, pretrained: bool) -> None:
    """Rebuild the first (3-channel) convolution of ``model`` for ``in_channels`` input channels."""
    if in_channels == 3:
        return
    found = _first_conv(model, 3)
    if found is None:
        raise ValueError(
            f"Cannot find the 3-channel input convolution of {type(model).__name__} to adapt it to "
            f"in_channels={in_channels}"
        )
    name, conv = found
    if conv.groups != 1:
        raise ValueError(
            f"The input convolution '{name}' of {type(model).__name__} is grouped; cannot adapt it to "
            f"in_channels={in_channels}"
        )
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_conv_weight(conv.weight, in_channels, pretrained=pretrained))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set_submodule(model, name, new)


def load_weights_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a local file (``torch.save`` output or ``.safetensors``), unwrapping checkpoints.

    Accepts a bare state dict or a checkpoint holding one under ``"state_dict"`` (Lightning), ``"model"``,
    ``"model_state_dict"``, ... Files are read with ``torch.load(weights_only=True)``: arbitrary pickled objects are
    refused.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(f"Reading {path} needs the 'safetensors' package: pip install safetensors") from e
        obj: object = load_file(path, device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
            raise ValueError(
                f"Could not read {path} as a weights file with torch.load(weights_only=True): {e}\n"
                "sesemi loads only plain tensors. If this is a trusted checkpoint holding other Python objects "
                "(e.g. a Lightning checkpoint with hyper-parameters), extract its state dict once with\n"
                "    ckpt = torch.load(path, weights_only=False); torch.save(ckpt['state_dict'], 'weights.pt')\n"
                "and pass weights.pt instead."
            ) from e
    # Unwrap nested checkpoints until we reach a mapping of tensors.
    for _ in range(4):
        if not isinstance(obj, Mapping) or all(isinstance(v, Tensor) for v in obj.values()):
            break
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not contain a state dict (found {type(obj).__name__})")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not state:
        raise ValueError(f"{path} contains no tensors under any of the keys {list(obj)[:20]}")
    return state


def _best_prefix(source_keys: Iterable[str], target_keys: set[str]) -> tuple[str, int]:
    """The key prefix (e.g. ``"backbone.model."``) whose removal makes most source keys match the target."""
    counts: dict[str, int] = {}
    for key in source_keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in target_keys:
                prefix = ".".join(parts[:i]) + "." if i else ""
                counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        return "", 0
    best = max(counts.values())
    prefix = min((p for p, c in counts.items() if c == best), key=lambda p: (len(p), p))
    return prefix, best


def _short_list(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_backbone_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    in_channels: int | None = None,
    ignore_prefixes: Iterable[str] = (),
    source: str = "state dict",
) -> None:
    """Load ``state_dict`` into ``module`` strictly, with the conveniences needed for backbones.

    * A common key prefix (``"module."``, ``"backbone.model."``, ...) is detected and removed.
    * Keys under ``ignore_prefixes`` (the removed classifier) that the module no longer has are skipped.
    * 4-d weights whose input-channel count differs only because of ``in_channels`` (the stem convolution) are
      adapted with :func:`adapt_conv_weight` (RGB filters summed for 1-channel input).

    Any other missing, unexpected or mis-shaped key raises ``ValueError``.
    """
    target = module.state_dict()
    prefix, matched = _best_prefix(state_dict.keys(), set(target))
    if matched == 0:
        raise ValueError(
            f"None of the {len(state_dict)} keys in {source} match {type(module).__name__} "
            f"(e.g. {_short_list(list(state_dict), 5)} vs {_short_list(list(target), 5)})"
        )
    ignore = tuple(ignore_prefixes)
    selected = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    to_load: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    mismatched_keys: set[str] = set()
    for key, value in selected.items():
        if key not in target:
            if not any(key == p or key.startswith(p + ".") for p in ignore):
                unexpected.append(key)
            continue
        expected = target[key]
        if value.shape != expected.shape:
            if (
                in_channels is not None
                and value.ndim == 4
                and expected.ndim == 4
                and expected.shape[1] == in_channels
                and value.shape[0] == expected.shape[0]
                and value.shape[2:] == expected.shape[2:]
            ):
                value = adapt_conv_weight(value, in_channels, pretrained=True)
            else:
                mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(expected.shape)}")
                mismatched_keys.add(key)
                continue
        to_load[key] = value.to(dtype=expected.dtype) if value.is_floating_point() else value
    # BatchNorm fills in num_batches_tracked itself for older checkpoints.
    missing = [
        k for k in target if k not in to_load and k not in mismatched_keys and not k.endswith("num_batches_tracked")
    ]
    if missing or unexpected or mismatched:
        where = f" (after removing the key prefix '{prefix}')" if prefix else ""
        problems = []
        if missing:
            problems.append(f"missing keys: {_short_list(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_short_list(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {_short_list(mismatched)}")
        raise ValueError(f"Cannot load {source} into {type(module).__name__}{where}; " + "; ".join(problems))
    module.load_state_dict(to_load, strict=False)
