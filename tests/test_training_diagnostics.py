"""What a run logs to diagnose itself, read back from the real event file and metrics.json of real CLI runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config, read_json, run_cli, run_dirs

from sesemi.datasets import FashionMNIST
from sesemi.metrics import CARD_WIDTH, class_tags

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = class_tags(FashionMNIST.class_names)  # "T-shirt/top" is tagged "T-shirt-top"


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


@pytest.mark.slow
def test_fmnist_run_logs_pseudo_label_quality_class_thresholds_and_per_class_results(workdir: Path):
    if not FMNIST.is_dir():
        pytest.fail(f"Fashion-MNIST is not installed at {FMNIST} (apt-get install dataset-fashion-mnist)")
    run_cli(
        [
            "data=fashion_mnist",
            "augment=fashion_mnist",
            "method=freematch",
            f"run.data_root={FMNIST.parent}",
            "data.val_per_class=20",
            "trainer.limit_test_batches=1",
            "data.eval_batch_size=100",
        ],
        workdir,
    )
    (run_dir,) = run_dirs(workdir)
    events = _events(run_dir)
    scalars = set(events.Tags()["scalars"])
    assert {"train/freematch/pl_precision", "train/freematch/pl_recall"} <= scalars
    assert {f"freematch_pl_recall/{c}" for c in CLASSES} <= scalars  # every class has images, so recall is defined
    assert {f"freematch_threshold/{c}" for c in CLASSES} <= scalars
    assert {f"val_class_acc/{c}" for c in CLASSES} | {f"test_class_acc/{c}" for c in CLASSES} <= scalars
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(events.Tags()["images"])
    image = events.Images("val/confusion_matrix")[-1]
    assert CARD_WIDTH >= image.width > 200 and CARD_WIDTH >= image.height > 200  # a TensorBoard card shows it whole
    assert {"lr/decay", "lr/no_decay"} <= scalars and "epoch" not in scalars
    assert "custom_scalars__config__" in events.Tags()["tensors"]

    classes = read_json(run_dir / "metrics.json")["classes"]
    for stage, size in (("val", 200), ("test", 100)):
        assert classes[stage]["classes"] == list(FashionMNIST.class_names)
        matrix = classes[stage]["confusion_matrix"]
        assert len(matrix) == 10 and sum(map(sum, matrix)) == size
        row = matrix[0]
        assert classes[stage]["accuracy"]["T-shirt/top"] == pytest.approx(row[0] / sum(row))


def _unlabeled_folder(root: Path) -> Path:
    from sesemi.datasets import Digits

    root.mkdir()
    digits = Digits(split="train")
    for i in range(40):
        digits[i][0].save(root / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_pseudo_label_quality_is_off_when_the_unlabeled_labels_are_unknown(workdir: Path):
    folder = _unlabeled_folder(workdir / "photos")
    run_cli(
        [
            "data.labels_per_class=null",  # every training image labeled: the unlabeled pool is the folder only
            f"data.extra_unlabeled=[{{_target_:sesemi.datasets.UnlabeledImages,root:{folder},mode:L}}]",
        ],
        workdir,
    )
    (run_dir,) = run_dirs(workdir / "runs")
    scalars = set(_events(run_dir).Tags()["scalars"])
    assert "train/fixmatch/mask_ratio" in scalars
    assert not [tag for tag in scalars if "pl_precision" in tag or "pl_recall" in tag]


@pytest.mark.slow
def test_unlabeled_batches_carry_indices_not_labels_and_the_truth_stays_aside():
    from sesemi.builders import build_datamodule

    datamodule = build_datamodule(compose_config(Path("unused"), ["data.num_workers=0"]))
    batch = next(iter(datamodule.train_dataloader()))[0]
    assert "target" in batch["labeled"] and "target" not in batch["unlabeled"]
    truth = datamodule.unlabeled_targets()
    index = batch["unlabeled"]["index"]
    train_targets = datamodule.train_set.targets
    expected = [train_targets[datamodule.split.unlabeled[i]] for i in index.tolist()]
    assert truth[index].tolist() == expected
