"""Any timm model as a sesemi backbone (optional extra: ``pip install 'sesemi[timm]'``).

``TimmBackbone("resnet50")`` is ``timm.create_model("resnet50", num_classes=0, in_chans=in_channels,
pretrained=False)``: timm's own classifier-free mode, returning pooled (pre-logits) features of size
``out_features`` (``model.head_hidden_size``, falling back to ``model.num_features``).

timm is never asked for pretrained weights (that would download them from the Hugging Face hub); pass
``pretrained_file`` to load a local state dict / checkpoint instead (classifier keys are ignored, a key prefix such
as ``"backbone.model."`` is found automatically, RGB stem filters are summed for 1-channel input).
"""

from __future__ import annotations

import difflib
import os

import torch
from torch import Tensor, nn

from sesemi.models.weights import load_backbone_state_dict, load_weights_file

__all__ = ["TimmBackbone"]

_RESERVED_KWARGS = {
    "pretrained": "timm is never asked for pretrained weights; pass pretrained_file=<local file> instead",
    "num_classes": "a backbone has no classifier (num_classes=0 is always used); the head is configured separately",
    "in_chans": "use in_channels",
}


def _import_timm():
    try:
        import timm
    except ImportError as e:
        raise ImportError(
            "TimmBackbone needs the optional dependency 'timm', which is not installed. "
            "Install it with: pip install 'sesemi[timm]'  (or: pip install timm)"
        ) from e
    return timm


class TimmBackbone(nn.Module):
    """A timm model without its classifier.

    Args:
        name: timm model name (``timm.list_models()``), optionally with a pretrained tag (``"resnet50.a1_in1k"``).
        in_channels: number of input image channels (1 for grayscale, 3 for RGB).
        pretrained_file: optional local weights file (state dict or checkpoint); nothing is ever downloaded.
        **kwargs: passed on to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``, ``img_size``).

    Attributes:
        out_features: size of the feature vector returned by ``forward``.
        model: the underlying timm model (created with ``num_classes=0``).
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        pretrained_file: str | os.PathLike | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        timm = _import_timm()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        for key, why in _RESERVED_KWARGS.items():
            if key in kwargs:
                raise TypeError(f"TimmBackbone does not accept '{key}': {why}")
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
            hint = ("Did you mean: " + ", ".join(close) + "?") if close else "See timm.list_models() for the names."
            raise ValueError(f"Unknown timm model '{name}'. {hint}")

        self.name = name
        self.in_channels = in_channels
        self.model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
        self.out_features: int = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

        if pretrained_file is not None:
            classifier = getattr(self.model, "pretrained_cfg", {}).get("classifier") or ()
            if isinstance(classifier, str):
                classifier = (classifier,)
            path = os.fspath(pretrained_file)
            load_backbone_state_dict(
                self.model,
                load_weights_file(path),
                in_channels=in_channels,
                ignore_prefixes=tuple(classifier),
                source=path,
            )

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.model(x), 1)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_channels={self.in_channels}, out_features={self.out_features}"
