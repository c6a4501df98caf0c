"""``python -m sesemi.predict`` end to end: a tiny digits model trained through the CLI predicts a folder of PNGs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli, run_dirs
from omegaconf import OmegaConf

from sesemi.datasets import Digits, UnlabeledImages
from sesemi.errors import ConfigError
from sesemi.inference import InferenceModel, tta_views
from sesemi.inference.build import instantiate
from sesemi.inference.model import available_cores, default_workers

CLASSES = [str(d) for d in range(10)]


def write_digit_pngs(folder: Path) -> list[str]:
    """The Digits test split as PNGs in three sub-folders (plus a non-image file); returns the relative paths."""
    dataset = Digits(split="test")
    ids = []
    for i in range(len(dataset)):
        image, _ = dataset[i]
        relative = Path(f"batch{i % 3}") / f"digit_{i:04d}.png"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / relative)
        ids.append(relative.as_posix())
    (folder / "README.txt").write_text("not an image")
    return sorted(ids)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """(launch dir, run dir, image ids) of a default digits run (FixMatch with EMA evaluation), 6 steps."""
    root = tmp_path_factory.mktemp("predict")
    run_cli([], root)
    (run_dir,) = run_dirs(root / "runs")
    images = root / "images"
    return root, run_dir, write_digit_pngs(images)


def predict(root: Path, *args: str, check: bool = True):
    return run_cli(["num_workers=0", *args], root, fast=False, module="sesemi.predict", check=check)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_predict_a_folder_writes_one_row_per_image(trained, tmp_path: Path):
    root, run_dir, ids = trained
    out = tmp_path / "preds.csv"
    proc = predict(
        root,
        f"checkpoint={run_dir}",
        f"images={root / 'images'}",
        "probabilities=true",
        f"output={out}",
    )
    assert f"wrote {len(ids)} predictions to {out}" in proc.stdout
    rows = read_csv(out)
    assert len(rows) == len(ids)
    assert list(rows[0])[:4] == ["id", "label", "index", "score"]
    assert sorted(r["id"] for r in rows) == ids  # paths relative to the folder, the text file skipped
    for row in rows:
        assert row["label"] in CLASSES and row["label"] == CLASSES[int(row["index"])]
        probs = [float(row[f"prob_{c}"]) for c in CLASSES]
        assert 0.0 <= float(row["score"]) <= 1.0
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-4)
        assert math.isclose(float(row["score"]), max(probs), abs_tol=1e-6)
        assert probs.index(max(probs)) == int(row["index"])
    assert not list(root.glob("outputs")) and not list(root.glob("*.log"))  # Hydra leaves nothing behind


@pytest.mark.slow
def test_default_output_is_in_the_run_dir_and_tta_runs(trained):
    root, run_dir, ids = trained
    plain = predict(
        root,
        f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"images={root / 'images'}",
    )
    flip = predict(root, f"checkpoint={run_dir}", f"images={root / 'images'}", "tta=flip")
    crops = predict(root, f"checkpoint={run_dir}", f"images={root / 'images'}", "tta=multicrop")
    outputs = sorted((run_dir / "predictions").glob("*.csv"))
    assert len(outputs) == 3  # <run dir>/predictions/<timestamp>[_n].csv, never overwritten
    results = {}
    for name, proc in (("none", plain), ("flip", flip), ("multicrop", crops)):
        (path,) = [p for p in outputs if str(p) in proc.stdout]
        rows = read_csv(path)
        assert len(rows) == len(ids) and all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
        results[name] = {r["id"]: float(r["score"]) for r in rows}
    assert results["flip"] != results["none"] and results["multicrop"] != results["none"]


@pytest.mark.slow
def test_dataset_val_reproduces_the_runs_validation_accuracy(trained, tmp_path: Path):
    """The EMA weights and the eval transform are the ones validation used: same accuracy to the last digit."""
    root, run_dir, _ = trained
    out = tmp_path / "val.csv"
    proc = predict(root, f"checkpoint={run_dir}", "dataset=val", f"output={out}")
    rows = read_csv(out)
    assert [int(r["id"]) for r in rows] == list(range(len(Digits(split="test"))))
    accuracy = sum(r["index"] == r["target"] for r in rows) / len(rows)
    expected = read_json(run_dir / "metrics.json")["objective"]["value"]  # best val/acc, from best.ckpt
    assert abs(accuracy - expected) < 1e-6
    assert f"accuracy {accuracy:.4f}" in proc.stdout


@pytest.mark.slow
def test_inference_model_uses_the_ema_weights(trained):
    root, run_dir, _ = trained
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    ema = InferenceModel.from_checkpoint(ckpt, device="cpu")
    raw = InferenceModel.from_checkpoint(ckpt, weights="model", device="cpu")
    assert (ema.weights, raw.weights, ema.classes, ema.image_mode) == (
        "ema",
        "model",
        CLASSES,
        "L",
    )
    for name, tensor in ema.model.state_dict().items():
        assert torch.equal(tensor, state[f"ema.module.{name}"])
    for name, tensor in raw.model.state_dict().items():
        assert torch.equal(tensor, state[f"model.{name}"])
    images = UnlabeledImages(root / "images", mode="L")
    probs = ema.predict_proba(images, tta="flip", batch_size=100)
    assert probs.shape == (len(images), 10) and torch.allclose(probs.sum(1), torch.ones(len(images)))
    x = torch.randn(2, 1, 8, 8)
    assert [v.shape for v in tta_views(x, "multicrop")] == [x.shape] * 5
    assert torch.equal(tta_views(x, "multicrop")[0], x)  # the centre crop is the image itself


@pytest.mark.slow
def test_predict_errors_are_one_line_with_the_fix(trained, tmp_path: Path):
    root, run_dir, _ = trained
    missing = predict(
        root,
        f"checkpoint={tmp_path / 'nope.ckpt'}",
        f"images={root / 'images'}",
        check=False,
    )
    assert missing.returncode == 2 and f"checkpoint: no checkpoint at {tmp_path / 'nope.ckpt'}" in missing.stderr
    neither = predict(root, f"checkpoint={run_dir}", check=False)
    assert neither.returncode == 2 and "images=" in neither.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = predict(root, f"checkpoint={run_dir}", f"images={empty}", check=False)
    assert no_images.returncode == 2 and str(empty) in no_images.stderr
    bad_tta = predict(
        root,
        f"checkpoint={run_dir}",
        f"images={root / 'images'}",
        "tta=rotate",
        check=False,
    )
    assert bad_tta.returncode == 2 and "tta" in bad_tta.stderr
    for proc in (missing, neither, no_images, bad_tta):
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_tta_flip_warns_for_a_model_trained_without_flips(trained, tmp_path: Path):
    root, run_dir, _ = trained
    flip = predict(
        root, f"checkpoint={run_dir}", f"images={root / 'images'}", "tta=flip", f"output={tmp_path / 'f.csv'}"
    )
    assert "trained without horizontal flips" in flip.stdout + flip.stderr  # digits' augment has no flips
    crops = predict(root, f"checkpoint={run_dir}", f"images={root / 'images'}", "tta=multicrop")
    assert "warning" not in (crops.stdout + crops.stderr).lower()


@pytest.mark.slow
def test_dataset_ids_are_file_paths_when_the_dataset_has_files(trained, tmp_path: Path):
    """An ImageFolder read as a dataset (class sub-folders batch0..2): ids are the paths under its root."""
    root, run_dir, ids = trained
    out = tmp_path / "folder.csv"
    node = f"dataset={{_target_:sesemi.datasets.ImageFolder,root:{root / 'images'},mode:L}}"
    predict(root, f"checkpoint={run_dir}", node, f"output={out}")
    rows = read_csv(out)
    assert sorted(r["id"] for r in rows) == ids
    assert {r["target"] for r in rows} == {"0", "1", "2"}  # the folder's own labels


@pytest.mark.slow
def test_default_workers_follow_the_machine(trained, tmp_path: Path):
    """No DataLoader warning about more workers than cores: the default is this machine's cores (at most 8)."""
    root, run_dir, ids = trained
    assert default_workers(None) == min(8, available_cores()) and default_workers(3) == 3
    proc = run_cli(
        [f"checkpoint={run_dir}", f"images={root / 'images'}", "batch_size=50", f"output={tmp_path / 'w.csv'}"],
        root,
        fast=False,
        module="sesemi.predict",
    )
    assert f"wrote {len(ids)} predictions" in proc.stdout
    assert "worker" not in proc.stderr.lower(), proc.stderr


def test_a_missing_user_class_names_the_inference_option_src_dir():
    cfg = OmegaConf.create({"model": {"backbone": {"_target_": "mylab.nets.Backbone"}}})
    with pytest.raises(ConfigError) as err:
        instantiate(cfg, "model.backbone")
    assert "src_dir" in err.value.fix and "run.src_dir" not in err.value.fix


def test_help_lists_only_what_predict_takes(workdir: Path):
    """``--help`` shows predict's own keys, not the training app's config groups that share its config folder."""
    text = run_cli(["--help"], workdir, fast=False, module="sesemi.predict").stdout
    assert text.startswith("python -m sesemi.predict checkpoint=")
    for key in ("checkpoint: null", "images: null", "dataset: null", "tta: none", "probabilities: false"):
        assert f"\n{key}\n" in text, key
    for group in ("method:", "model:", "experiment:", "hparams_search:", "Configuration groups"):
        assert group not in text, group
