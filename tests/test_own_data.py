"""docs/own_data.md, as a user follows it: the folder layout it shows (made-up images), its data config file, and every
command it gives, run as written from the folder it runs them in (tiny settings, tests/conftest.py FAST); what the
training prints has the shape of the output the page shows."""

from __future__ import annotations

import random
import re
import shlex
from pathlib import Path

import pytest
from conftest import run_cli, run_dirs
from PIL import Image, ImageDraw

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_data.md"
CLASSES = ("cat", "dog", "fox")
# Values of the page's commands that do not fit a test's few steps, and what the test runs instead.
TEST_VALUES = {
    "trainer.max_steps=100": "trainer.max_steps=6",
    "trainer.val_check_interval=50": "trainer.val_check_interval=3",
}


def make_pets(root: Path, per_class: int, seed: int = 0) -> None:
    """Photos of three made-up classes in several sizes: a class is a shape (cat: ellipse, dog: box, fox: wedge) of
    a random colour on a random background. (The page's output was made by this, 100 per class.)"""
    rng = random.Random(seed)
    for k, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = rng.choice([(64, 48), (48, 64), (80, 60)])
            image = Image.new("RGB", (w, h), tuple(rng.randrange(40, 200) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            box = [
                rng.randrange(0, w // 3),
                rng.randrange(0, h // 3),
                rng.randrange(2 * w // 3, w),
                rng.randrange(2 * h // 3, h),
            ]
            fill = tuple(rng.randrange(0, 256) for _ in range(3))
            if k == 0:
                draw.ellipse(box, fill=fill)
            elif k == 1:
                draw.rectangle(box, fill=fill)
            else:
                draw.pieslice(box, 30, 300, fill=fill)
            image.save(folder / f"{name}_{i:03d}.jpg", quality=90)


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def shape(line: str) -> str:
    """A printed line without what changes from run to run: numbers, the run dir's location, the time."""
    line = re.sub(r"\S*/runs/", "<dir>/runs/", line)
    line = re.sub(r"\S*/data/", "<dir>/data/", line)
    return re.sub(r"\d+(\.\d+)?", "N", line)


@pytest.fixture
def project(workdir: Path) -> Path:
    """The page's folder: data/pets with class subfolders, and configs/data/pets.yaml as the page writes it."""
    layout = blocks("text")[0]
    assert all(f"    {name}/" in layout for name in CLASSES) and "data/pets/" in layout
    make_pets(workdir / "data" / "pets", per_class=20)
    (config,) = [b for b in blocks("yaml") if b.startswith("# configs/data/pets.yaml")]
    (workdir / "configs" / "data").mkdir(parents=True)
    (workdir / "configs" / "data" / "pets.yaml").write_text(config)
    return workdir


def commands() -> list[list[str]]:
    lines = [line for block in blocks("bash") for line in block.strip().splitlines()]
    assert len(lines) == 3 and all(line.startswith("python -m sesemi.") for line in lines)
    return [[TEST_VALUES.get(a, a) for a in shlex.split(line)[2:]] for line in lines]


@pytest.mark.slow
def test_every_command_of_the_page_runs_as_written(project: Path):
    show, train, predict = commands()
    assert show[0] == "sesemi.train" and train[0] == "sesemi.train" and predict[0] == "sesemi.predict"

    shown = run_cli(show[1:], project).stdout
    assert "root: ${datapath:pets}" in shown and "val_fraction: 0.2" in shown and "ImageFolder" in shown

    proc = run_cli(train[1:], project)
    printed = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    (run_dir,) = run_dirs(project / "runs" / "pets")
    page = [line for line in blocks("text")[1].strip().splitlines() if not line.startswith("train: ")]
    real = [line for line in printed if not line.startswith("train: ")]  # the bar: off under FAST
    assert [shape(line) for line in real] == [shape(line) for line in page], "\n".join(real)
    assert f"sesemi: run dir {run_dir}" in printed

    new_photos = project / "new_photos"
    make_pets(new_photos, per_class=2, seed=1)
    args = [a.replace("runs/pets/<timestamp>", f"runs/pets/{run_dir.name}") for a in predict[1:]]
    run_cli(args, project, fast=False, module="sesemi.predict")
    (csv_file,) = (run_dir / "predictions").glob("*.csv")
    rows = csv_file.read_text().splitlines()
    assert len(rows) == 1 + 2 * len(CLASSES)
    assert all(row.split(",")[1] in CLASSES for row in rows[1:]), rows[:3]
