"""Every built-in experiment, data, augment and model config composes and builds, so no recipe rots.

Datasets that need files are not loaded; their configs are checked to point under ``run.data_root`` and to fail
with the dataset's not-found message when the files are absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from PIL import Image

import sesemi.configs
from sesemi import compose
from sesemi.builders import build_module, instantiate_key
from sesemi.data import MultiView
from sesemi.datasets import DatasetNotFoundError
from sesemi.errors import ConfigError

CONFIGS = Path(sesemi.configs.__file__).parent


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


EXPERIMENTS = options("experiment")

# dataset _target_ -> (image side, PIL mode, number of classes) of its samples
IMAGES = {
    "sesemi.datasets.Digits": (8, "L", 10),
    "sesemi.datasets.MNIST": (28, "L", 10),
    "sesemi.datasets.FashionMNIST": (28, "L", 10),
    "sesemi.datasets.CIFAR10": (32, "RGB", 10),
    "sesemi.datasets.CIFAR100": (32, "RGB", 100),
    "sesemi.datasets.SVHN": (32, "RGB", 10),
    "sesemi.datasets.STL10": (96, "RGB", 10),
    "sesemi.datasets.ImageFolder": (300, "RGB", 5),
}


def compose_train(overrides: list[str], tmp_path: Path) -> DictConfig:
    return compose([*overrides, f"run.data_root={tmp_path / 'data'}"], output_dir=tmp_path / "run")


def random_image(side: int, mode: str, width: int | None = None) -> Image.Image:
    channels = 1 if mode == "L" else 3
    array = torch.randint(0, 256, (side, width or side, channels), dtype=torch.uint8).squeeze(-1).numpy()
    return Image.fromarray(array, mode=None)


def check_views(cfg: DictConfig, keys: list[str], side: int, mode: str, size: int | None = None) -> torch.Tensor:
    """Instantiate the transforms at ``keys``, apply each to an image, return the batch of views."""
    image = random_image(side, mode, width=None if size is None else side + 50)  # photos need not be square
    views = []
    for key in keys:
        transform = instantiate_key(cfg, key)
        assert callable(transform), key
        one = MultiView({"view": transform})  # per image, or batched (sesemi.data.batch_pipeline) when collated
        view = one.collate([one(image)])["view"][0]
        assert view.dtype == torch.float32 and torch.isfinite(view).all(), key
        channels = 1 if mode == "L" else 3
        expected = size or side
        assert tuple(view.shape) == (channels, expected, expected), key
        views.append(view)
    return torch.stack(views)


def test_there_are_experiments():
    assert {
        "fmnist_supervised",
        "fmnist_fixmatch",
        "cifar10_wrn28_fixmatch_4000",
        "cifar10_wrn28_fixmatch_250",
        "cifar100_wrn28_8_fixmatch_10000",
        "svhn_wrn28_fixmatch_1000",
        "stl10_fixmatch",
        "digits_supervised",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds(name: str, tmp_path: Path):
    cfg = compose_train([f"experiment={name}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["run"]["id"] == name
    schedule = resolved["lr_scheduler"]
    assert schedule.get("T_max", schedule.get("total_steps")) == cfg.trainer.max_steps
    side, mode, num_classes = IMAGES[cfg.data.train._target_]
    if cfg.data.train._target_ != "sesemi.datasets.Digits":
        assert resolved["data"]["train"]["root"].startswith(str(tmp_path / "data"))

    module = build_module(cfg, num_classes)  # backbone, head, loss heads, optimizer and scheduler factories
    module.configure_optimizers()
    size = cfg.augment.get("size")
    keys = ["augment.weak", "augment.strong", "augment.eval"]
    batch = check_views(cfg, keys, side, mode, size)
    if cfg.method.unlabeled_views is not None:
        check_views(
            cfg,
            [f"method.unlabeled_views.{v}" for v in cfg.method.unlabeled_views],
            side,
            mode,
            size,
        )
    module.eval()
    with torch.no_grad():
        logits = module(batch)
    assert logits.shape == (len(keys), num_classes)


FIXMATCH_RECIPES = {
    # name: (dataset, labels per class, WRN widen factor, weight decay)
    "cifar10_wrn28_fixmatch_4000": ("sesemi.datasets.CIFAR10", 400, 2, 5e-4),
    "cifar10_wrn28_fixmatch_250": ("sesemi.datasets.CIFAR10", 25, 2, 5e-4),
    "cifar100_wrn28_8_fixmatch_10000": ("sesemi.datasets.CIFAR100", 100, 8, 1e-3),
    "svhn_wrn28_fixmatch_1000": ("sesemi.datasets.SVHN", 100, 2, 5e-4),
    "stl10_fixmatch": ("sesemi.datasets.STL10", 100, 2, 5e-4),
}


@pytest.mark.parametrize("name", sorted(FIXMATCH_RECIPES))
def test_fixmatch_recipes_follow_the_paper(name: str, tmp_path: Path):
    dataset, labels, widen, weight_decay = FIXMATCH_RECIPES[name]
    cfg = compose_train([f"experiment={name}"], tmp_path)
    assert cfg.data.train._target_ == dataset and cfg.data.test._target_ == dataset
    assert cfg.data.test.split == "test" and cfg.data.val is None and cfg.data.val_per_class > 0
    assert cfg.data.labels_per_class == labels
    assert (cfg.data.labeled_batch_size, cfg.data.unlabeled_batch_size) == (64, 7 * 64)
    assert cfg.model.backbone._target_ == "sesemi.models.WideResNet"
    assert (cfg.model.backbone.depth, cfg.model.backbone.widen_factor) == (28, widen)
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (
        0.03,
        0.9,
        True,
    )
    assert cfg.optimizer.weight_decay == weight_decay
    assert cfg.method.loss_heads.fixmatch.threshold == 0.95
    assert cfg.method.ema.decay == 0.999 and cfg.method.ema.evaluate
    assert cfg.trainer.max_steps == 2**20
    assert cfg.lr_scheduler._target_ == "sesemi.schedules.fixmatch_cosine"
    assert cfg.lr_scheduler.total_steps == 2**20


# data config -> (augment config, folder under run.data_root that the not-found error names)
DATA = {
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
    "mnist": ("mnist", "mnist"),
    "cifar10": ("cifar", "cifar-10-batches-py"),
    "cifar100": ("cifar100", "cifar-100-python"),
    "svhn": ("svhn", "svhn"),
    "stl10": ("stl10", "stl10_binary"),
    "image_folder": ("imagenet", "images/train"),
}


def test_every_data_config_is_covered():
    assert set(options("data")) == {"base", "digits", *DATA}


def test_dataset_configs_extend_the_base_config(tmp_path: Path):
    """Each dataset config sets only its datasets and what differs; the rest comes from data/base.yaml."""
    base = OmegaConf.load(CONFIGS / "data" / "base.yaml")
    for name in ("digits", *DATA):
        own = OmegaConf.load(CONFIGS / "data" / f"{name}.yaml")
        assert list(own.defaults) == ["base", "_self_"], name
        assert set(own) - {"defaults"} < set(base), name
        cfg = compose_train([f"data={name}"], tmp_path)
        assert list(cfg.data) == list(base), name  # every data module argument, in the base's order
    with pytest.raises(MissingMandatoryValue, match=r"full_key: data\.train"):  # not an option by itself
        OmegaConf.to_container(compose_train(["data=base"], tmp_path).data, throw_on_missing=True)


@pytest.mark.parametrize("data", sorted(DATA))
def test_data_config_points_under_data_root(data: str, tmp_path: Path):
    augment, folder = DATA[data]
    cfg = compose_train([f"data={data}", f"augment={augment}"], tmp_path)
    expected = tmp_path / "data" / folder
    assert cfg.data.train.root == str(expected)
    if data != "image_folder":  # literature setting: hold validation out of train, report test
        assert cfg.data.val is None and cfg.data.val_per_class > 0
        assert cfg.data.test.split == "test" and cfg.data.test._target_ == cfg.data.train._target_
    with pytest.raises((DatasetNotFoundError, ConfigError), match=re.escape(str(expected))):
        instantiate_key(cfg, "data.train")
    for extra in cfg.data.extra_unlabeled or []:
        assert extra.root == str(expected) and extra.split == "unlabeled"


@pytest.mark.parametrize(
    ("augment", "side", "mode", "flips"),
    [
        ("mnist", 28, "L", False),
        ("fashion_mnist", 28, "L", True),
        ("cifar", 32, "RGB", True),
        ("cifar100", 32, "RGB", True),
        ("svhn", 32, "RGB", False),
        ("stl10", 96, "RGB", True),
        ("imagenet", 300, "RGB", True),
        ("digits", 8, "L", False),
    ],
)
def test_augment_config_builds(augment: str, side: int, mode: str, flips: bool, tmp_path: Path):
    assert augment in options("augment")
    cfg = compose_train([f"augment={augment}"], tmp_path)
    check_views(
        cfg,
        ["augment.weak", "augment.strong", "augment.eval"],
        side,
        mode,
        cfg.augment.get("size"),
    )
    assert len(cfg.augment.mean) == len(cfg.augment.std) == (1 if mode == "L" else 3)
    for key in ("weak", "strong"):
        steps = [s._target_.rsplit(".", 1)[-1] for s in cfg.augment[key].steps]
        assert ("RandomHorizontalFlip" in steps) == flips, (key, steps)
    strong = [s._target_.rsplit(".", 1)[-1] for s in cfg.augment.strong.steps]
    assert {"RandAugment", "TrivialAugmentWide"} & set(strong)
    assert [a._target_ for a in cfg.augment.strong.after] == ["sesemi.data.cutout"]


def test_cifar100_normalises_with_its_own_statistics(tmp_path: Path):
    c10 = compose_train(["augment=cifar"], tmp_path).augment
    c100 = compose_train(["augment=cifar100"], tmp_path).augment
    assert list(c10.mean) != list(c100.mean)
    assert OmegaConf.to_container(c10.strong) == OmegaConf.to_container(c100.strong)  # same pipelines


@pytest.mark.parametrize("model", options("model"))
def test_model_config_builds(model: str, tmp_path: Path):
    if model == "timm":
        pytest.importorskip("timm")
    cfg = compose_train([f"model={model}"], tmp_path)
    backbone = instantiate_key(cfg, "model.backbone")
    head = instantiate_key(cfg, "model.head")(in_features=backbone.out_features, num_classes=7)
    channels = cfg.model.backbone.get("in_channels", 3)
    backbone.eval()
    with torch.no_grad():
        assert head(backbone(torch.randn(2, channels, 32, 32))).shape == (2, 7)
