"""Batched views (``sesemi.data.batch_pipeline``): each image of a batch gets its own draw of the same augmentation as
the per-image pipeline, and the data module delivers them through its loader workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sesemi.compat.torchvision import apply_augmentation, augmentation_space
from sesemi.data import SemiSupervisedDataModule, batch_pipeline, cutout, pipeline
from sesemi.data.batched import BatchHorizontalFlip, BatchRandAugment, BatchRandomCrop, BatchRandomErasing

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """256 real Fashion-MNIST training images as a uint8 batch [N, 1, 28, 28]."""
    if not FMNIST.exists():
        pytest.skip("apt-get install dataset-fashion-mnist")
    from sesemi.datasets import FashionMNIST

    dataset = FashionMNIST(str(FMNIST), split="train")
    return torch.stack([TF.pil_to_tensor(dataset[i][0]) for i in range(256)])


def test_flip_flips_each_image_or_leaves_it(images):
    torch.manual_seed(0)
    out = BatchHorizontalFlip(v2.RandomHorizontalFlip())(images)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0.35 < sum(f and not k for f, k in zip(flipped, kept)) / len(images) < 0.65


@pytest.mark.parametrize("padding_mode", ["constant", "edge", "reflect"])
def test_crop_gives_each_image_a_window_of_its_padded_image(images, padding_mode):
    torch.manual_seed(0)
    crop = v2.RandomCrop(28, padding=3, padding_mode=padding_mode)
    out = BatchRandomCrop(crop)(images[:64])
    offsets = set()
    for o, i in zip(out, images[:64]):
        padded = TF.pad(i, [3], padding_mode=padding_mode)
        windows = [(t, c) for t in range(7) for c in range(7) if torch.equal(padded[:, t : t + 28, c : c + 28], o)]
        assert windows, "a crop that is no window of the padded image"
        offsets.add(windows[0])
    assert len(offsets) > 10  # per-image offsets, not one for the batch


def test_randaugment_applies_to_each_image_one_of_torchvisions_operations(images):
    """With one operation per image, every output is torchvision's kernel applied to that image with one of the
    operations and signs RandAugment draws from, and the batch uses many different ones."""
    torch.manual_seed(0)
    transform = v2.RandAugment(num_ops=1, magnitude=10)
    batch = images[:48]
    out = BatchRandAugment(transform)(batch)
    space = augmentation_space(transform)
    used = set()
    for o, image in zip(out, batch):
        matches = []
        for name, (magnitudes_fn, signed) in space.items():
            magnitudes = magnitudes_fn(transform.num_magnitude_bins, 28, 28)
            value = float(magnitudes[transform.magnitude]) if magnitudes is not None and magnitudes.ndim else 0.0
            for m in {value, -value} if signed else {value}:
                if torch.equal(apply_augmentation(transform, image[None], name, m)[0], o):
                    matches.append((name, m))
        assert matches, "an image changed by no RandAugment operation"
        used.add(matches[0])
    assert len(used) >= 8


def test_erasing_sets_one_box_per_image_within_the_area_bounds(images):
    torch.manual_seed(0)
    erase = cutout(0.5)
    x = images.float() / 255 + 1.0  # no pixel is 0, the erase value
    out = BatchRandomErasing(erase)(x)
    areas = []
    for o in out:
        rows, cols = torch.nonzero(o[0] == 0, as_tuple=True)
        assert len(rows), "cutout with p=1 erased nothing"
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert height * width == len(rows)  # one filled rectangle
        areas.append(len(rows) / 28**2)
    assert min(areas) >= 0.02 - 1e-3 and max(areas) <= 0.25 + 0.02
    assert len(set(areas)) > 20


@needs_fmnist
@pytest.mark.parametrize("view", ["weak", "strong"])
def test_batched_views_have_the_per_image_pipelines_statistics(images, view):
    """Same augmentation, other draws: pixel mean, spread and share of background agree with the per-image
    pipeline over 256 real images (differences of a few thousandths between repeated draws of either)."""
    from PIL import Image

    steps = [v2.RandomHorizontalFlip(), v2.RandomCrop(28, padding=3)]
    after = []
    if view == "strong":
        steps.append(v2.RandAugment(num_ops=2, magnitude=10))
        after = [cutout(0.5)]
    kwargs = dict(steps=steps, mean=[0.286], std=[0.353], after=after)
    torch.manual_seed(0)
    batched = batch_pipeline(**kwargs)(images)
    per_image = torch.stack([pipeline(**kwargs)(Image.fromarray(i[0].numpy())) for i in images])
    for stat in (torch.mean, torch.std, lambda t: (t == t.min()).float().mean()):
        assert stat(batched).item() == pytest.approx(stat(per_image).item(), abs=0.03)


def test_unsupported_steps_name_the_alternative():
    with pytest.raises(ValueError, match=r"no batched ColorJitter.*sesemi.data.pipeline"):
        batch_pipeline([v2.ColorJitter(0.4)], mean=[0.5], std=[0.5])


class _Sized(torch.utils.data.Dataset):
    """Grayscale squares of the given sizes, labels cycling over 2 classes."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.targets = [i % 2 for i in range(len(sizes))]

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int):
        from PIL import Image

        return Image.new("L", (self.sizes[i], self.sizes[i]), color=i % 256), self.targets[i]


def _module(dataset, num_workers: int = 2) -> SemiSupervisedDataModule:
    eval_view = pipeline([], mean=[0.5], std=[0.5])
    strong = batch_pipeline([v2.RandomHorizontalFlip(), v2.RandAugment(2, 10)], [0.5], [0.5], after=[cutout(0.5)])
    module = SemiSupervisedDataModule(
        dataset,
        labeled_views={"weak": pipeline([v2.RandomHorizontalFlip()], [0.5], [0.5])},
        unlabeled_views={"weak": batch_pipeline([v2.RandomHorizontalFlip()], [0.5], [0.5]), "strong": strong},
        eval_transform=eval_view,
        labels_per_class=4,
        val_per_class=4,
        labeled_batch_size=4,
        unlabeled_batch_size=16,
        num_workers=num_workers,
        persistent_workers=False,
    )
    module.setup("fit")
    return module


def test_the_data_module_delivers_batched_views_from_its_loader_workers():
    module = _module(_Sized([12] * 80))
    batch, *_ = next(iter(module.train_dataloader()))
    unlabeled = batch["unlabeled"]
    assert set(unlabeled) == {"weak", "strong", "index"}
    assert unlabeled["weak"].shape == unlabeled["strong"].shape == (16, 1, 12, 12)
    assert unlabeled["weak"].dtype == torch.float32 and not torch.equal(unlabeled["weak"], unlabeled["strong"])
    assert batch["labeled"]["weak"].shape == (4, 1, 12, 12)
    assert set(module.sample_batches()["unlabeled"]) == {"weak", "strong"}


def test_images_of_different_sizes_are_refused_with_the_fix():
    pool = _module(_Sized([12, 14] * 40), num_workers=0).unlabeled_dataset()
    samples = [pool[i] for i in range(len(pool))]
    with pytest.raises(ValueError, match=r"need images of one size.*sesemi.data.pipeline"):
        pool.collate(samples)
