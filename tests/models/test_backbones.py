"""Tests of the built-in backbones and the backbone contract (``out_features`` + ``forward -> [B, out_features]``)."""

from __future__ import annotations

import sys
import urllib.request

import pytest
import torch
import torchvision
from torch import nn

from sesemi.models.resnet_cifar import CifarResNet, resnet18_cifar, resnet50_cifar
from sesemi.models.torchvision_backbone import TorchvisionBackbone, torch_hub_checkpoint_path
from sesemi.models.weights import adapt_conv_weight, load_backbone_state_dict
from sesemi.models.wide_resnet import WideResNet, wrn_28_2, wrn_28_8


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to download weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _check_contract(backbone: nn.Module, in_channels: int, size: int, batch: int = 2, backward: bool = True) -> None:
    assert isinstance(backbone.out_features, int) and backbone.out_features > 0
    x = torch.randn(batch, in_channels, size, size)
    backbone.train()
    out = backbone(x)
    assert out.shape == (batch, backbone.out_features)
    assert torch.isfinite(out).all()
    if backward:
        out.square().mean().backward()
        grads = [p.grad for p in backbone.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------------------------------------------------------------
# Generic contract: every built-in backbone, grayscale and RGB
# ---------------------------------------------------------------------------------------------------------------------

BACKBONES = {
    # name: (factory(in_channels), input size, expected out_features)
    "wrn_28_2": (lambda c: wrn_28_2(in_channels=c), 32, 128),
    "cifar_resnet18": (lambda c: CifarResNet(18, in_channels=c), 32, 512),
    "torchvision_resnet18": (lambda c: TorchvisionBackbone("resnet18", in_channels=c), 64, 512),
}


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_contract(name, in_channels):
    factory, size, out_features = BACKBONES[name]
    backbone = factory(in_channels)
    assert backbone.out_features == out_features
    _check_contract(backbone, in_channels, size)


# ---------------------------------------------------------------------------------------------------------------------
# WideResNet
# ---------------------------------------------------------------------------------------------------------------------


def test_wrn_28_2_matches_the_ssl_literature():
    model = wrn_28_2()
    # FixMatch's WRN-28-2 has 1,467,610 parameters with its 10-class classifier (128 * 10 + 10 of them).
    assert _n_params(model) == pytest.approx(1.47e6, rel=0.01)
    assert _n_params(model) == 1_467_610 - (128 * 10 + 10)
    assert model.out_features == 128
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.001 for m in bns)
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(m.negative_slope == 0.1 for m in acts)
    assert not any(isinstance(m, (nn.ReLU, nn.Linear, nn.MaxPool2d)) for m in model.modules())


def test_wrn_28_8_and_options():
    model = wrn_28_8(in_channels=1)
    assert model.out_features == 512
    assert _n_params(model) == pytest.approx(23.35e6, rel=0.01)
    _check_contract(model, 1, 32, batch=1, backward=False)

    custom = WideResNet(depth=10, widen_factor=1, drop_rate=0.3, bn_momentum=0.1, leaky_slope=0.2)
    assert custom.out_features == 64
    assert all(m.momentum == 0.1 for m in custom.modules() if isinstance(m, nn.BatchNorm2d))
    _check_contract(custom, 3, 32)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=27)
    with pytest.raises(TypeError):
        wrn_28_2(depth=16)


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR ResNet
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth, out_features", [(18, 512), (34, 512), (50, 2048)])
def test_cifar_resnet_depths(depth, out_features):
    model = CifarResNet(depth=depth)
    assert model.out_features == out_features
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    _check_contract(model, 3, 32, batch=2, backward=depth == 18)


def test_cifar_resnet_width_and_errors():
    assert CifarResNet(18, width=16).out_features == 128
    model = resnet50_cifar(in_channels=1, width=16)
    assert model.out_features == 512
    _check_contract(model, 1, 32)
    assert resnet18_cifar().out_features == 512
    with pytest.raises(ValueError, match="depth must be one of"):
        CifarResNet(depth=20)


# ---------------------------------------------------------------------------------------------------------------------
# torchvision
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, size, out_features",
    [
        ("mobilenet_v3_small", {}, 64, 1024),  # keeps the pre-logits layer, like timm
        ("efficientnet_b0", {}, 64, 1280),
        ("convnext_tiny", {}, 64, 768),  # keeps LayerNorm + Flatten of the classifier
        ("densenet121", {}, 64, 1024),
        ("regnet_x_400mf", {}, 64, 400),
        ("squeezenet1_1", {}, 64, 512),
        ("vit_b_16", {"image_size": 32}, 32, 768),
    ],
)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_torchvision_classifier_is_stripped(name, kwargs, size, out_features, in_channels):
    backbone = TorchvisionBackbone(name, in_channels=in_channels, **kwargs)
    assert backbone.out_features == out_features
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in backbone.modules())
    with torch.no_grad():
        _check_contract(backbone, in_channels, size, backward=False)


def test_torchvision_aux_heads_removed():
    backbone = TorchvisionBackbone("googlenet", in_channels=1, init_weights=False)
    assert backbone.out_features == 1024
    assert backbone.model.aux1 is None and backbone.model.aux2 is None
    with torch.no_grad():
        _check_contract(backbone, 1, 64, backward=False)  # training mode: no aux outputs


def _reference_resnet18() -> nn.Module:
    ref = torchvision.models.resnet18()
    with torch.no_grad():  # non-trivial BN statistics so that loading them is checked too
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return ref


def test_torchvision_local_state_dict(tmp_path):
    ref = _reference_resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)

    backbone = TorchvisionBackbone("resnet18", weights=str(path)).eval()
    ref.fc = nn.Identity()
    ref.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), ref(x))

    gray = TorchvisionBackbone("resnet18", in_channels=1, weights=path)
    assert gray.model.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(gray.model.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(gray.model.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_torchvision_local_checkpoint_with_prefix(tmp_path):
    source = TorchvisionBackbone("resnet18", in_channels=1)
    # A Lightning-style checkpoint of a whole model: backbone under a prefix, plus a head and other entries.
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(10, 512)
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "state_dict": state}, path)

    loaded = TorchvisionBackbone("resnet18", in_channels=1, weights=str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_torchvision_weights_errors(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ValueError, match=r"unexpected keys|missing keys|shape"):
        TorchvisionBackbone("resnet18", weights=str(path))
    with pytest.raises(FileNotFoundError, match="not found"):
        TorchvisionBackbone("resnet18", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match=r"ResNet18_Weights\.IMAGENET1K_V1"):
        TorchvisionBackbone("resnet18", weights="ResNet18_Weights.NOPE")
    with pytest.raises(ValueError, match="do not belong"):
        TorchvisionBackbone("resnet18", weights="ResNet50_Weights.IMAGENET1K_V2")


def test_torchvision_weights_enum_not_cached_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert torch_hub_checkpoint_path(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url) == str(expected)
    with pytest.raises(FileNotFoundError) as info:
        TorchvisionBackbone("resnet50", weights="ResNet50_Weights.IMAGENET1K_V2")
    message = str(info.value)
    assert str(expected) in message
    assert "never downloads" in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert not expected.exists()


def test_torchvision_weights_enum_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = _reference_resnet18()
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), cached)

    backbone = TorchvisionBackbone("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1")
    torch.testing.assert_close(backbone.model.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    gray = TorchvisionBackbone("resnet18", in_channels=1, weights="DEFAULT")
    torch.testing.assert_close(gray.model.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))
    assert gray.out_features == 512
    with torch.no_grad():
        _check_contract(gray, 1, 64, backward=False)


def test_torchvision_unknown_model_name():
    with pytest.raises(ValueError) as info:
        TorchvisionBackbone("resnet181")
    assert "Unknown torchvision model 'resnet181'" in str(info.value)
    assert "resnet18" in str(info.value)
    with pytest.raises(ValueError, match="resnext50_32x4d"):
        TorchvisionBackbone("resnext50")
    with pytest.raises(ValueError, match="not an image-classification model"):
        TorchvisionBackbone("fasterrcnn_resnet50_fpn")


def test_weight_helpers():
    w = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_conv_weight(w, 1), w.sum(1, keepdim=True))
    assert adapt_conv_weight(w, 4).shape == (8, 4, 3, 3)
    w6 = adapt_conv_weight(w, 6)
    torch.testing.assert_close(w6.sum(1), w.sum(1))  # same response to a constant image
    random_init = adapt_conv_weight(w, 2, pretrained=False)
    torch.testing.assert_close(random_init, w[:, :2])  # slices keep the initializer's distribution
    assert adapt_conv_weight(w, 3) is w
    with pytest.raises(ValueError, match="None of the"):
        load_backbone_state_dict(nn.Linear(2, 2), {"foo.bar": torch.zeros(1)})


def test_a_grayscale_stem_responds_as_the_rgb_stem_to_the_same_image_in_colour():
    """Summing the pretrained RGB filters (timm's rule) keeps the activation scale that later layers were trained
    on: a 1-channel conv on a grayscale image equals the 3-channel conv on that image repeated over RGB. Averaging
    (the old rule) gave a third of it."""
    rgb = nn.Conv2d(3, 8, 3, padding=1)
    gray = nn.Conv2d(1, 8, 3, padding=1)
    with torch.no_grad():
        gray.weight.copy_(adapt_conv_weight(rgb.weight, 1))
        gray.bias.copy_(rgb.bias)
    image = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(gray(image), rgb(image.expand(-1, 3, -1, -1)))


# ---------------------------------------------------------------------------------------------------------------------
# timm (optional)
# ---------------------------------------------------------------------------------------------------------------------


def test_timm_missing_gives_install_hint(monkeypatch):
    from sesemi.models.timm_backbone import TimmBackbone

    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'sesemi\[timm\]'"):
        TimmBackbone("resnet18")


@pytest.mark.parametrize("in_channels", [1, 3])
def test_timm_backbone(in_channels):
    timm = pytest.importorskip("timm")
    from sesemi.models.timm_backbone import TimmBackbone

    backbone = TimmBackbone("resnet18", in_channels=in_channels)
    assert backbone.out_features == 512
    _check_contract(backbone, in_channels, 64)

    small = TimmBackbone("mobilenetv3_small_100", in_channels=in_channels)
    assert small.out_features == timm.create_model("mobilenetv3_small_100", num_classes=0).head_hidden_size
    with torch.no_grad():
        _check_contract(small, in_channels, 64, backward=False)


def test_timm_pretrained_file_and_errors(tmp_path):
    timm = pytest.importorskip("timm")
    from sesemi.models.timm_backbone import TimmBackbone

    ref = timm.create_model("resnet18", pretrained=False)  # with its 1000-class classifier
    path = tmp_path / "timm_resnet18.pth"
    torch.save(ref.state_dict(), path)

    rgb = TimmBackbone("resnet18", pretrained_file=str(path)).eval()
    ref.reset_classifier(0)
    ref.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rgb(x), ref(x))
    gray = TimmBackbone("resnet18", in_channels=1, pretrained_file=path)
    torch.testing.assert_close(gray.model.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))

    with pytest.raises(ValueError, match="resnet18"):
        TimmBackbone("resnet181")
    with pytest.raises(TypeError, match="pretrained_file"):
        TimmBackbone("resnet18", pretrained=True)
    with pytest.raises(TypeError, match="num_classes"):
        TimmBackbone("resnet18", num_classes=10)
