"""Backbones (feature extractors exposing ``out_features``) and classification heads."""

from sesemi.models.cnn import SmallCNN
from sesemi.models.heads import LinearHead, MLPHead
from sesemi.models.resnet_cifar import CifarResNet, resnet18_cifar, resnet34_cifar, resnet50_cifar
from sesemi.models.timm_backbone import TimmBackbone
from sesemi.models.torchvision_backbone import TorchvisionBackbone
from sesemi.models.wide_resnet import WideResNet, wrn_28_2, wrn_28_8

__all__ = [
    "CifarResNet",
    "LinearHead",
    "MLPHead",
    "SmallCNN",
    "TimmBackbone",
    "TorchvisionBackbone",
    "WideResNet",
    "resnet18_cifar",
    "resnet34_cifar",
    "resnet50_cifar",
    "wrn_28_2",
    "wrn_28_8",
]
