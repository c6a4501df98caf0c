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
summed over the colour channels for 1-channel (grayscale) input (:func:`sesemi.models.weights.adapt_conv_weight`).
Reading and loading weight files is :mod:`sesemi.models.weights`, shared with :mod:`sesemi.models.timm_backbone`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from sesemi.models.weights import load_backbone_state_dict, load_weights_file, set_input_channels

__all__ = ["TorchvisionBackbone", "torch_hub_checkpoint_path"]

_WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".pth.tar", ".ckpt", ".bin", ".safetensors", ".tar")


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
        set_input_channels(model, in_channels, pretrained=weights_enum is not None)
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
