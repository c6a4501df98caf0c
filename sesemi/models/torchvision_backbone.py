"""Any torchvision image-classification model as a sesemi backbone.

``TorchvisionBackbone("resnet50")`` builds ``torchvision.models.get_model("resnet50", weights=None)``, removes its
classifier (the final ``Linear`` layer, plus the dropout right before it) and returns pooled, flattened features of
size ``out_features`` (``fc.in_features`` for ResNet, 2048 for ResNet-50).

Pretrained weights are only ever read from disk; sesemi never downloads anything at run time. ``weights`` is either

* a path to a local file: a ``state_dict`` of the torchvision model (classifier keys are ignored), a state dict
  saved from a sesemi backbone, or a checkpoint holding one under ``"state_dict"`` / ``"model"`` (e.g. a Lightning
  checkpoint; the key prefix such as ``"backbone.model."`` is found automatically), or
* a torchvision weights enum name such as ``"ResNet50_Weights.IMAGENET1K_V2"`` (or just ``"IMAGENET1K_V2"`` /
  ``"DEFAULT"`` for the model's own enum), loaded only if its file is already in the torch hub cache
  ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub``).

With ``in_channels != 3`` the first convolution is rebuilt for that many channels; pretrained RGB filters are
averaged over the colour channels for 1-channel (grayscale) input.

The weight-loading helpers (``load_weights_file``, ``load_backbone_state_dict``, ``adapt_conv_weight``) are shared
with :mod:`sesemi.models.timm_backbone`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import pickle
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

__all__ = [
    "TorchvisionBackbone",
    "adapt_conv_weight",
    "load_backbone_state_dict",
    "load_weights_file",
    "torch_hub_checkpoint_path",
]

_WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".pth.tar", ".ckpt", ".bin", ".safetensors", ".tar")
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params")


# ---------------------------------------------------------------------------------------------------------------------
# Shared weight-loading helpers
# ---------------------------------------------------------------------------------------------------------------------


def adapt_conv_weight(weight: Tensor, in_channels: int, pretrained: bool = True) -> Tensor:
    """Adapt a conv weight ``[out, C, kh, kw]`` to ``in_channels`` input channels.

    Pretrained weights: averaged over the C channels for ``in_channels == 1``; otherwise cycled through the C channels
    and rescaled by ``C / in_channels`` to keep the activation scale (as timm does; exact for a multiple of C).
    Randomly initialized weights are only cycled (slicing keeps the initializer's distribution).
    """
    c = weight.shape[1]
    if in_channels == c:
        return weight
    if pretrained and in_channels == 1:
        return weight.mean(dim=1, keepdim=True)
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


def _set_input_channels(model: nn.Module, in_channels: int, pretrained: bool) -> None:
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
      adapted with :func:`adapt_conv_weight` (RGB filters averaged for 1-channel input).

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


# ---------------------------------------------------------------------------------------------------------------------
# torchvision specifics
# ---------------------------------------------------------------------------------------------------------------------


def _classification_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _check_model_name(name: str) -> str:
    key = name.lower()
    available = _classification_models()
    if key in available:
        return key
    if key in torchvision.models.list_models():
        raise ValueError(
            f"torchvision model '{name}' is not an image-classification model (detection, "
            "segmentation, video, ... models cannot be used as backbones). Classification models: "
            + ", ".join(available)
        )
    close = difflib.get_close_matches(key, available, n=5, cutoff=0.6)
    if close:
        hint = "Did you mean: " + ", ".join(close) + "?"
    else:
        hint = "Available classification models: " + ", ".join(available)
    raise ValueError(f"Unknown torchvision model '{name}'. {hint}")


def torch_hub_checkpoint_path(url: str) -> str:
    """Where ``torch.hub.load_state_dict_from_url(url)`` caches ``url``: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def _looks_like_path(weights: str) -> bool:
    return (
        os.sep in weights
        or "/" in weights
        or weights.startswith("~")
        or weights.lower().endswith(_WEIGHT_FILE_SUFFIXES)
    )


def _resolve_weights_enum(model_name: str, weights: str):
    weights_cls = torchvision.models.get_model_weights(model_name)
    available = [f"{weights_cls.__name__}.{member}" for member in weights_cls.__members__]
    try:
        enum = torchvision.models.get_weight(weights) if "." in weights else weights_cls[weights]
    except (ValueError, KeyError):
        raise ValueError(
            f"'{weights}' is neither an existing weights file nor a torchvision weights name for "
            f"'{model_name}'. Weights names for it: {', '.join(available)}"
        ) from None
    if not isinstance(enum, weights_cls):
        raise ValueError(
            f"Weights {enum!r} do not belong to torchvision model '{model_name}'; use one of {', '.join(available)}"
        )
    return enum


@contextlib.contextmanager
def _downloads_forbidden() -> Iterator[None]:
    """Make any attempt of torch.hub to download a file fail instead (belt and braces: we check the cache first)."""
    original = torch.hub.download_url_to_file

    def refuse(url: str, dst: str, *args, **kwargs):
        raise RuntimeError(f"sesemi never downloads weights at run time (refused to fetch {url} to {dst})")

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original


def _strip_classifier(model: nn.Module) -> tuple[int, list[str]]:
    """Replace the classifier of a torchvision classification model by ``Identity``.

    Returns the feature size and the names of the removed parameterized modules (their checkpoint keys are ignored
    when loading weights). For a ``Sequential`` classifier only the final ``Linear`` and the dropout right before it
    are removed, so e.g. ConvNeXt keeps its LayerNorm + Flatten and MobileNetV3 its pre-logits layer (1280 / 1024
    features), like timm's ``num_classes=0``.
    """
    removed: list[str] = []
    # Auxiliary classifiers of GoogLeNet / Inception-v3 are training-only heads: drop them.
    if hasattr(model, "aux_logits"):
        for aux in ("AuxLogits", "aux1", "aux2"):
            if getattr(model, aux, None) is not None:
                setattr(model, aux, None)
                removed.append(aux)
        model.aux_logits = False

    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            break
    else:
        raise ValueError(
            f"Don't know how to remove the classifier of {type(model).__name__} (no fc / classifier / "
            "heads / head module)"
        )

    if isinstance(head, nn.Linear):
        setattr(model, attr, nn.Identity())
        return head.in_features, [*removed, attr]

    if isinstance(head, nn.Sequential):
        children = list(head.named_children())
        linear_at = [i for i, (_, m) in enumerate(children) if isinstance(m, nn.Linear)]
        if linear_at and all(sum(p.numel() for p in m.parameters()) == 0 for _, m in children[linear_at[-1] + 1 :]):
            last = linear_at[-1]
            out_features = children[last][1].in_features
            first = last
            while first > 0 and isinstance(children[first - 1][1], nn.Dropout):
                first -= 1
            for child_name, _ in children[first:]:
                setattr(head, child_name, nn.Identity())
            return out_features, [*removed, f"{attr}.{children[last][0]}"]
        convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
        if convs and not linear_at:
            # SqueezeNet: Dropout, 1x1 conv to the classes, ReLU, global pool.
            setattr(model, attr, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)))
            return convs[0].in_channels, [*removed, attr]

    raise ValueError(f"Don't know how to remove the classifier '{attr}' of {type(model).__name__}: {head}")


class TorchvisionBackbone(nn.Module):
    """A torchvision classification model without its classifier.

    Args:
        name: torchvision model name (``torchvision.models.list_models(module=torchvision.models)``), e.g.
            ``"resnet18"``, ``"efficientnet_b0"``, ``"convnext_tiny"``, ``"vit_b_16"``.
        in_channels: number of input image channels (1 for grayscale, 3 for RGB).
        weights: ``None`` (random init), a local weights file, or a torchvision weights name
            (``"ResNet50_Weights.IMAGENET1K_V2"``, or ``"IMAGENET1K_V2"`` / ``"DEFAULT"``) whose file must already be
            in the torch hub cache. sesemi never downloads weights at run time.
        **model_kwargs: passed on to the torchvision model builder (e.g. ``image_size=32`` for ViT).

    Attributes:
        out_features: size of the feature vector returned by ``forward`` (the in_features of the removed final
            ``Linear``: 512 for resnet18, 2048 for resnet50, 1280 for efficientnet_b0, 768 for vit_b_16, ...).
        model: the underlying torchvision model with its classifier replaced by ``Identity``.
    """

    def __init__(self, name: str, in_channels: int = 3, weights: str | None = None, **model_kwargs) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        key = _check_model_name(name)
        self.name = key
        self.in_channels = in_channels

        weights_file: str | None = None
        weights_enum = None
        if weights is not None:
            weights = os.fspath(weights)
            expanded = os.path.expanduser(weights)
            if os.path.isfile(expanded):
                weights_file = expanded
            elif _looks_like_path(weights):
                raise FileNotFoundError(f"Weights file for torchvision model '{key}' not found: {expanded}")
            else:
                weights_enum = _resolve_weights_enum(key, weights)

        if weights_enum is not None:
            cached = torch_hub_checkpoint_path(weights_enum.url)
            if not os.path.isfile(cached):
                raise FileNotFoundError(
                    f"Pretrained weights {weights_enum!r} for torchvision model '{key}' are not in the torch hub "
                    f"cache: expected the file {cached}. sesemi never downloads weights at run time. Download "
                    f"{weights_enum.url} on a machine with network access and put it at that path (the cache folder "
                    "is $TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints), or pass the path of "
                    "a local weights file as `weights`."
                )
            with _downloads_forbidden():
                model = torchvision.models.get_model(key, weights=weights_enum, **model_kwargs)
        else:
            model = torchvision.models.get_model(key, weights=None, **model_kwargs)

        if in_channels != 3 and getattr(model, "transform_input", False):
            # Inception-v3 / GoogLeNet re-normalize 3 RGB channels when built with pretrained weights.
            model.transform_input = False
        _set_input_channels(model, in_channels, pretrained=weights_enum is not None)
        self.out_features, removed = _strip_classifier(model)
        self.model = model

        if weights_file is not None:
            load_backbone_state_dict(
                self.model,
                load_weights_file(weights_file),
                in_channels=in_channels,
                ignore_prefixes=removed,
                source=weights_file,
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if out.ndim == 4:
            out = F.adaptive_avg_pool2d(out, 1)
        return torch.flatten(out, 1)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_channels={self.in_channels}, out_features={self.out_features}"
