"""``python -m sesemi.pseudo_label`` end to end: a digits teacher labels PNGs, a student trains on the result."""

from __future__ import annotations

import csv
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import read_json, run_cli, run_dirs

from sesemi.datasets import Digits, ImageFolder
from sesemi.inference import InferenceModel, image_folder
from sesemi.inference.noisy_student import class_folder_names

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(launch dir, teacher run dir, folder of unlabeled PNGs in two sub-folders)."""
    root = tmp_path_factory.mktemp("pseudo")
    run_cli(["trainer.max_steps=20", "trainer.val_check_interval=10"], root)
    (run_dir,) = run_dirs(root / "runs")
    images = root / "unlabeled"
    dataset = Digits(split="test")
    for i in range(len(dataset)):
        path = images / f"part{i % 2}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset[i][0].save(path)
    return root, run_dir, images


def pseudo_label(root: Path, *args: str, check: bool = True):
    return run_cli(
        ["num_workers=0", *args],
        root,
        fast=False,
        module="sesemi.pseudo_label",
        check=check,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_pseudo_labels_train_a_student(teacher):
    root, run_dir, images = teacher
    out = root / "pseudo_all"
    proc = pseudo_label(
        root,
        f"checkpoint={run_dir}",
        f"images={images}",
        f"output={out}",
        "threshold=0",
    )
    assert "kept 450 of 450 images" in proc.stdout

    rows = read_csv(out / "pseudo_labels.csv")
    assert len(rows) == 450 and list(rows[0]) == [
        "id",
        "label",
        "index",
        "score",
        "path",
    ]
    assert (out / "classes.txt").read_text().split() == CLASSES
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == CLASSES  # every class, even if empty
    for row in rows[:20]:
        link = out / row["path"]
        assert row["path"] == f"{row['label']}/{row['id']}"
        assert link.is_symlink() and link.resolve() == (images / row["id"]).resolve()

    dataset = ImageFolder(out, mode="L", allow_empty_classes=True)  # a 20-step teacher predicts some classes never
    assert dataset.classes == CLASSES and len(dataset) == 450
    by_path = {Path(p).relative_to(out).as_posix(): t for p, t in zip(dataset.paths, dataset.targets)}
    assert all(by_path[r["path"]] == int(r["index"]) for r in rows)
    assert dataset[0][0].mode == "L" and dataset[0][0].size == (8, 8)

    # The student: the exact overrides the tool printed, on the teacher's data config (digits val/test).
    line = proc.stdout.split("train a student on them with:")[1].strip().splitlines()[0]
    overrides = shlex.split(line.split("<your data/experiment overrides>", 1)[1])
    assert overrides[0] == "~data.train" and "mode:L" in overrides[1]
    run_cli(["method=supervised", "run.id=student", *overrides], root)
    (student,) = run_dirs(root / "runs" / "student")
    assert read_json(student / "status.json")["state"] == "completed"
    assert read_json(student / "metrics.json")["global_step"] == 6
    config = yaml.safe_load((student / ".hydra" / "config.yaml").read_text())
    empty = {"allow_empty_classes": True} if len(set(dataset.targets)) < len(CLASSES) else {}
    assert config["data"]["train"] == {
        "_target_": "sesemi.datasets.ImageFolder",
        "root": str(out),
        "mode": "L",
        **empty,
    }
    assert config["data"]["labels_per_class"] is None


@pytest.mark.slow
def test_threshold_and_max_per_class_select_the_confident(teacher):
    root, run_dir, images = teacher
    model = InferenceModel.from_checkpoint(run_dir, device="cpu")
    data, ids = image_folder(images, "L")
    score, index = model.predict_proba(data).max(dim=1)
    threshold = float(score.median())  # about half the images pass
    expected = {ids[i] for i in range(len(ids)) if score[i] >= threshold}

    out = root / "pseudo_confident"
    pseudo_label(
        root,
        f"checkpoint={run_dir}",
        f"images={images}",
        f"output={out}",
        f"threshold={threshold}",
    )
    rows = read_csv(out / "pseudo_labels.csv")
    assert {r["id"] for r in rows} == expected
    assert all(float(r["score"]) >= threshold - 1e-6 for r in rows)

    capped = root / "pseudo_capped"
    pseudo_label(
        root,
        f"checkpoint={run_dir}",
        f"images={images}",
        f"output={capped}",
        "threshold=0",
        "max_per_class=5",
        "link=copy",
    )
    rows = read_csv(capped / "pseudo_labels.csv")
    for c in CLASSES:
        kept = [r for r in rows if r["label"] == c]
        files = list((capped / c).rglob("*.png"))
        assert len(kept) == len(files) <= 5 and not any(f.is_symlink() for f in files)
        scores = sorted((float(score[ids.index(r["id"])]) for r in kept), reverse=True)
        everything = sorted(
            (float(score[i]) for i in range(len(ids)) if int(index[i]) == int(c)),
            reverse=True,
        )
        assert scores == pytest.approx(everything[:5], abs=1e-5)  # the most confident of each class

    again = pseudo_label(
        root,
        f"checkpoint={run_dir}",
        f"images={images}",
        f"output={capped}",
        check=False,
    )
    assert again.returncode == 2 and "not an empty directory" in again.stderr


def test_class_folder_names_are_safe_and_unique():
    names = class_folder_names(["T-shirt/top", "Trouser", ".hidden", "", "Trouser", "a\\b"])
    assert names == [
        "T-shirt_top",
        "Trouser",
        "_.hidden",
        "class_3",
        "Trouser_4",
        "a_b",
    ]


def test_the_printed_overrides_keep_a_class_the_teacher_kept_nothing_of(tmp_path: Path):
    """A class with no confident image still has its folder (the student's head keeps the teacher's classes): the
    printed ``+data.train=...`` node allows that empty folder, which ImageFolder otherwise refuses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from sesemi.builders import instantiate_key
    from sesemi.inference.noisy_student import PseudoLabels

    out = tmp_path / "pseudo labels"  # a space: the root is quoted in the override
    for folder in ("cat", "dog"):
        (out / folder).mkdir(parents=True)
    Digits(split="test")[0][0].save(out / "cat" / "a.png")
    labels = PseudoLabels(out, ["cat", "dog"], ["cat", "dog"], kept=1, total=2, per_class=[1, 0], mode="L")
    node = OverridesParser.create().parse_override(labels.train_overrides()[1]).value()
    assert node["allow_empty_classes"] is True
    dataset = instantiate_key(OmegaConf.create({"data": {"train": node}}), "data.train")  # as training builds it
    assert dataset.classes == ["cat", "dog"] and dataset.targets == [0]
    full = PseudoLabels(out, ["cat", "dog"], ["cat", "dog"], kept=2, total=2, per_class=[1, 1], mode="L")
    assert "allow_empty_classes" not in full.train_overrides()[1]


def test_help_lists_only_what_pseudo_label_takes(workdir: Path):
    text = run_cli(["--help"], workdir, fast=False, module="sesemi.pseudo_label").stdout
    assert text.startswith("python -m sesemi.pseudo_label checkpoint=")
    for key in ("checkpoint: null", "images: null", "output: null", "threshold: 0.9", "link: symlink"):
        assert f"\n{key}\n" in text, key
    for group in ("method:", "model:", "experiment:", "Configuration groups"):
        assert group not in text, group
