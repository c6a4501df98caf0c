"""Backbones (feature extractors exposing ``out_features``) and classification heads."""

from sesemi.models.cnn import SmallCNN
from sesemi.models.heads import LinearHead, MLPHead

__all__ = ["LinearHead", "MLPHead", "SmallCNN"]
