"""The up-front check of a folder's images against the views they get (``sesemi.data.image_check``), on real PNGs
and the real digits pipelines: the error names the files and the view, and one image per size is all it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.transforms import v2

from sesemi.data import MultiView, batch_pipeline, pipeline, to_normalized_tensor
from sesemi.data.image_check import check_dataset_images
from sesemi.datasets import ImageFolder
from sesemi.errors import ConfigError

CROP = [v2.RandomCrop(8, padding=1, padding_mode="edge")]
WEAK = MultiView({"weak": pipeline(CROP, [0.3], [0.4])})
EVAL = MultiView({"image": to_normalized_tensor([0.3], [0.4])})
BATCHED = MultiView({"weak": batch_pipeline(CROP, [0.3], [0.4])})


def folder(root: Path, sizes: dict[str, tuple[int, int]], verify: bool = True) -> ImageFolder:
    for name, (width, height) in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((height, width), 100, np.uint8)).save(root / name)
    return ImageFolder(root, mode="L", verify=verify)


def test_images_of_one_size_pass_every_view(tmp_path: Path):
    dataset = folder(tmp_path, {f"{c}/{i}.png": (8, 8) for c in "ab" for i in range(3)})
    check_dataset_images("data.train", dataset, [WEAK, EVAL, BATCHED])


@pytest.mark.parametrize("views", [WEAK, BATCHED], ids=["per image", "batched"])
def test_an_image_a_view_fails_on_is_named_with_the_view(tmp_path: Path, views: MultiView):
    dataset = folder(tmp_path, {"a/0.png": (8, 8), "a/1.png": (8, 8), "b/0.png": (8, 8), "b/tiny.png": (1, 1)})
    with pytest.raises(ConfigError) as info:
        check_dataset_images("data.train", dataset, [views])
    err = info.value
    assert err.key == "data.train"
    assert err.problem.startswith(f"the 'weak' view fails on 1 of 4 images, {tmp_path / 'b/tiny.png'} (1x1 pixels): ")
    assert f"(rm {tmp_path / 'b/tiny.png'})" in err.fix


def test_images_a_view_makes_another_shape_of_are_named(tmp_path: Path):
    sizes = {f"a/{i}.png": (8, 8) for i in range(3)} | {"b/0.png": (8, 8), "b/wide.png": (12, 8), "b/big.png": (9, 9)}
    dataset = folder(tmp_path, sizes)
    check_dataset_images("data.train", dataset, [WEAK])  # the crop makes 8x8 of all of them
    with pytest.raises(ConfigError) as info:
        check_dataset_images("data.val", dataset, [WEAK, EVAL])
    problem = info.value.problem
    assert problem.startswith("the 'image' view makes tensors of another shape of 2 of 6 images, ")
    assert str(tmp_path / "b/wide.png") in problem and str(tmp_path / "b/big.png") in problem
    assert "12x8 pixels -> (1, 8, 12)" in problem and "than of the other images ((1, 8, 8))" in problem


def test_a_folder_not_verified_is_left_to_the_network_check(tmp_path: Path):
    dataset = folder(tmp_path, {"a/0.png": (8, 8), "b/tiny.png": (1, 1)}, verify=False)
    assert dataset.sizes is None  # verify=False reads no image before training, so their sizes are unknown
    check_dataset_images("data.train", dataset, [WEAK])
