"""The benchmark scripts (benchmarks/*.py) run end to end on tiny settings and write well-formed JSON and markdown;
timings are not asserted. Also: the optimisations they led to keep sesemi's results exactly as they were."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import markdown_table, write_section  # noqa: E402 - benchmarks/ is not a package


def run_script(script: str, args: list[str], tmp_path: Path, timeout: float = 900) -> tuple[dict, str]:
    """``python benchmarks/<script> ARGS --out <tmp>/out.json --doc <tmp>/benchmarks.md``; returns (JSON, section)."""
    out, doc = tmp_path / "out.json", tmp_path / "benchmarks.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--out", str(out), "--doc", str(doc), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    result = json.loads(out.read_text())
    assert result["command"].startswith(f"python benchmarks/{script}")
    assert "machine" in result and result["machine"]["torch"]
    return result, doc.read_text()


def section(doc: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", doc, re.DOTALL)
    assert match, f"no {name} section in\n{doc}"
    return match.group(1)


def assert_tables(text: str) -> None:
    """Every markdown table is rectangular: a header, a |---| separator, rows with as many cells as the header."""
    lines = text.splitlines()
    tables = 0
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            tables += 1
            width = lines[i - 1].count("|")
            assert line.count("|") == width, line
            j = i + 1
            assert j < len(lines) and lines[j].startswith("|"), "a table without rows"
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") == width, f"ragged row: {lines[j]}"
                j += 1
    assert tables >= 1, text


def assert_reproducible(text: str, script: str) -> None:
    assert re.search(rf"```bash\npython benchmarks/{script}[^\n]*\n```", text), text


@pytest.mark.slow
def test_step_overhead(tmp_path: Path):
    result, doc = run_script(
        "step_overhead.py",
        [
            "--steps",
            "6",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--batches",
            "2",
            "data.labeled_batch_size=2",
            "data.unlabeled_batch_size=2",
            "model.backbone.width=4",
        ],
        tmp_path,
    )
    for mode in ("wall_clock", "cpu_time"):
        variants = result[mode]["variants"]
        assert set(variants) == {"default", "bare", "lightning"}
        for v in variants.values():
            for clock in ("wall", "cpu"):
                assert v[clock]["ratio"] > 0 and v[clock]["hand_ms"] > 0
    text = section(doc, "P1")
    assert_tables(text)
    assert_reproducible(text, "step_overhead.py")


@pytest.mark.slow
def test_startup(tmp_path: Path):
    result, doc = run_script("startup.py", ["--repeats", "1", "--no-warm", "--no-importtime"], tmp_path)
    assert result["median_to_first_step_s"] > 0 and result["median_import_pl_s"] > 0
    assert set(result["milestones_median_s"]) == {
        "callbacks_built",
        "setup",
        "train_start",
        "first_batch",
        "first_step",
    }
    assert result["milestones_median_s"]["first_step"] == pytest.approx(result["median_to_first_step_s"])
    text = section(doc, "P2")
    assert_tables(text)
    assert_reproducible(text, "startup.py")


@pytest.mark.slow
def test_data_pipeline(tmp_path: Path):
    result, doc = run_script(
        "data_pipeline.py",
        [
            "--seconds",
            "0.2",
            "--repeats",
            "1",
            "--experiments",
            "digits",
            "cifar10",
            "--steps",
            "6",
            "--val-every",
            "3",
            "--runs",
            "1",
            "--settings",
            "num_workers=0",
        ],
        tmp_path,
    )
    assert [r["experiment"].split()[0] for r in result["throughput"]] == ["default", "cifar10_wrn28_fixmatch_4000"]
    assert all(r["labeled_images_per_s"] > 0 and r["unlabeled_images_per_s"] > 0 for r in result["throughput"])
    (wait,) = result["data_wait"].values()
    assert 0.0 <= wait["wait_fraction"] < 1.0 and wait["runs"][0]["steps_timed"] > 0
    text = section(doc, "P3")
    assert_tables(text)
    assert_reproducible(text, "data_pipeline.py")


@pytest.mark.slow
def test_gpu_throughput_runs_on_cpu(tmp_path: Path):
    result, doc = run_script(
        "gpu_throughput.py",
        [
            "--device",
            "cpu",
            "--tiny",
            "--models",
            "wrn28_2",
            "--compile-backend",
            "eager",
            "--steps",
            "2",
        ],
        tmp_path,
    )
    assert not result.get("errors"), result.get("errors")
    combos = {(r["loop"], r["precision"], r["channels_last"], r["compile"]) for r in result["rows"]}
    assert ("sesemi", "bf16-mixed", True, True) in combos and ("hand", "32-true", False, False) in combos
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    text = section(doc, "P4")
    assert "No GPU was lent to this task" in text
    assert_tables(text)
    assert_reproducible(text, "gpu_throughput.py")


@pytest.mark.slow
def test_memory(tmp_path: Path):
    result, doc = run_script("memory.py", ["--steps", "2", "trainer.val_check_interval=1"], tmp_path)
    default, ddp = result["runs"]["default CPU run"], result["runs"]["2-process CPU DDP"]
    assert default["peak_tree_rss_mib"] > 100 and default["peak_tree_pss_mib"] > 100
    assert ddp["max_processes"] > default["max_processes"] >= 1
    text = section(doc, "memory")
    assert_tables(text)
    assert_reproducible(text, "memory.py")


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)",
)
def test_fmnist_accuracy(tmp_path: Path):
    out, doc, commands = tmp_path / "out.json", tmp_path / "benchmarks.md", tmp_path / "commands.json"
    args = ["--methods", "supervised", "fixmatch", "--labels", "4", "--seeds", "0", "--budget-min", "0.1"]
    short = ["trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "data.eval_batch_size=64"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fmnist_accuracy.py"), *args, "--out", str(out)]
    cmd += ["--doc", str(doc), "--commands", str(commands), *short]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-5000:]
    rows = json.loads(out.read_text())
    assert sorted(r["method"] for r in rows) == ["fixmatch", "supervised"]
    assert all(r["labels_per_class"] == 4 and r["steps"] >= 1 and 0 <= r["test_acc"] <= 1 for r in rows)
    text = section(doc.read_text(), "fmnist")
    assert_tables(text)
    assert "| 4 | 0.1 min | supervised |" in text and "| 4 | 0.1 min | fixmatch |" in text
    assert_reproducible(text, "fmnist_accuracy.py")
    assert json.loads(commands.read_text()) == [f"python benchmarks/fmnist_accuracy.py {' '.join(cmd[2:])}"]
    # --table-only renders the same section again from the results, training nothing.
    doc.write_text("# Benchmarks\n")
    subprocess.run([*cmd, "--table-only"], cwd=tmp_path, capture_output=True, timeout=60, check=True)
    assert section(doc.read_text(), "fmnist") == text


@pytest.mark.slow
@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)",
)
def test_fmnist_levers(tmp_path: Path):
    out, doc, commands = tmp_path / "out.json", tmp_path / "benchmarks.md", tmp_path / "commands.json"
    args = ["--variants", "fixmatch_fastest", "softmatch_warmup", "--steps", "5", "--labels", "4", "--seeds", "0"]
    short = ["trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "data.eval_batch_size=64"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fmnist_levers.py"), *args, "--out", str(out)]
    cmd += ["--doc", str(doc), "--commands", str(commands), *short]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-5000:]
    rows = json.loads(out.read_text())
    assert sorted(r["variant"] for r in rows) == ["fixmatch_fastest", "softmatch_warmup"]
    assert all(r["steps"] == 5 and 0 <= r["test_acc"] <= 1 and r["s_per_step"] > 0 for r in rows)
    text = section(doc.read_text(), "levers")
    assert_tables(text)
    assert "| 4 | fixmatch_fastest |" in text and "| 4 | softmatch_warmup |" in text
    assert_reproducible(text, "fmnist_levers.py")


@pytest.mark.slow
def test_recipes(tmp_path: Path):
    """Each shipped recipe beside supervised-only through the real CLI (digits: shipped inside scikit-learn)."""
    out, doc, commands = tmp_path / "out.json", tmp_path / "benchmarks.md", tmp_path / "commands.json"
    args = ["--datasets", "digits", "--labels", "4", "--seeds", "0", "--budget-min", "2.5"]
    short = ["trainer.max_steps=6", "trainer.val_check_interval=3"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "recipes.py"), *args, "--out", str(out)]
    cmd += ["--doc", str(doc), "--commands", str(commands), *short]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-5000:]
    rows = json.loads(out.read_text())
    assert sorted((r["recipe"], r["role"]) for r in rows) == [
        ("digits_softmatch_cpu", "semi"),
        ("digits_supervised", "supervised"),
    ]
    assert all(r["steps"] == 6 and 0 <= r["test_acc"] <= 1 and r["budget_min"] == 2.5 for r in rows)
    text = section(doc.read_text(), "recipes")
    assert_tables(text)
    assert "| digits | 4 | 2.5 min | `digits_softmatch_cpu` |" in text
    assert_reproducible(text, "recipes.py")
    # A changed semi-supervised recipe is re-run alone: the supervised-only rows stay.
    cmd[cmd.index("--seeds") + 1] = "1"
    proc = subprocess.run([*cmd, "--roles", "semi"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    rows = json.loads(out.read_text())
    assert sorted((r["role"], r["seed"]) for r in rows) == [("semi", 0), ("semi", 1), ("supervised", 0)]
    text = section(doc.read_text(), "recipes")
    assert re.search(r"\| `digits_softmatch_cpu` \| [\d.]+ ± [\d.]+ \(seeds 0, 1\) \|", text), text


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (scripts/slurm_cluster.sh start)")
def test_cluster_submit(tmp_path: Path):
    """3 held points per launcher on the test cluster (submitted, counted in the queue, cancelled)."""
    result, doc = run_script("cluster_submit.py", ["--sizes", "3"], tmp_path, timeout=600)
    rows = {r["launcher"]: r for r in result["results"]}
    assert sorted(rows) == ["slurm_cpu", "submitit_slurm"]
    for row in rows.values():
        assert row["all_queued_s"] is not None and row["error"] is None, row
        assert len(row["load"]) == 2
    assert rows["slurm_cpu"]["run_dirs"] == [3, 3] and rows["slurm_cpu"]["status"]["last_line"] == "3 jobs: 3 completed"
    assert result["command"] == "python benchmarks/cluster_submit.py --sizes 3"
    text = section(doc, "cluster_submit")
    assert_tables(text)
    assert_reproducible(text, "cluster_submit.py")
    assert "- 3 points: `slurm_cpu` " in text and "x." in text


def test_write_section_rewrites_only_its_own_section(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\nIntro by hand.\n\n## Sweeps\n\n<!-- sweep:start -->\nsweep table\n<!-- sweep:end -->\n"
    )
    write_section(doc, "P1", "P1: step overhead", markdown_table(["a", "b"], [[1, 2]]))
    write_section(doc, "P1", "P1: step overhead", "second version")
    text = doc.read_text()
    assert text.count("## P1: step overhead") == 1 and "second version" in text and "| 1 | 2 |" not in text
    assert "Intro by hand." in text and "<!-- sweep:start -->\nsweep table\n<!-- sweep:end -->" in text


USB_PYTHON = ROOT / ".venv-usb" / "bin" / "python"


def test_usb_side_by_side_needs_its_venv(tmp_path: Path):
    """Without USB's venv (benchmarks/setup_usb.sh) the script says so in one line and writes nothing."""
    out, doc = tmp_path / "out.json", tmp_path / "benchmarks.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "usb_side_by_side.py"), "step", "--out", str(out)]
    cmd += ["--doc", str(doc), "--usb-python", str(tmp_path / "no-venv" / "bin" / "python")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"error: --usb-python {tmp_path / 'no-venv' / 'bin' / 'python'} does not exist: run "
        "`bash benchmarks/setup_usb.sh` first"
    ]
    assert not out.exists() and not doc.exists()


def test_usb_stand_ins_fail_by_name():
    """The empty modules that stand in for semilearn's unused imports import, and fail by name when used."""
    import usb_side_by_side

    finder = usb_side_by_side._StandIns(("sesemi_absent_pkg", "json"))
    assert finder.roots == ("sesemi_absent_pkg",)  # an installed package is never replaced
    sys.meta_path.append(finder)
    try:
        from sesemi_absent_pkg.file_utils import PaddingStrategy

        with pytest.raises(ModuleNotFoundError, match=r"sesemi_absent_pkg\.file_utils\.PaddingStrategy"):
            PaddingStrategy()
        with pytest.raises(ModuleNotFoundError, match=r"PaddingStrategy\.LONGEST"):
            _ = PaddingStrategy.LONGEST
    finally:
        sys.meta_path.remove(finder)
        for name in [m for m in sys.modules if m.startswith("sesemi_absent_pkg")]:
            del sys.modules[name]


@pytest.mark.slow
@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file() or not USB_PYTHON.is_file(),
    reason="needs Fashion-MNIST and USB's venv (bash benchmarks/setup_usb.sh)",
)
def test_usb_side_by_side(tmp_path: Path):
    step_args = ["step", "--repeats", "1", "--steps", "4", "--warmup", "1"]
    result, doc = run_script("usb_side_by_side.py", step_args, tmp_path)
    step = result["step"]
    assert step["batch"] == [16, 112] and step["params"] > 10_000
    assert step["steps_per_s"]["sesemi"] > 0 and step["steps_per_s"]["usb"] > 0 and step["ratio"] > 0
    result, doc = run_script(
        "usb_side_by_side.py",
        ["budget", "--budget-min", "0.05", "--calibration-steps", "12", "data.eval_batch_size=1000"],
        tmp_path,
    )
    [budget] = result["budget"]  # one run per (labels, budget, seed)
    assert budget["steps_planned"] >= 20 and 1 <= budget["steps"] <= budget["steps_planned"]
    assert budget["steps"] == budget["steps_planned"] or budget["stopped_by_budget"]
    assert 0 <= budget["test_acc_raw"] <= 1 and 0 <= budget["test_acc_ema"] <= 1
    assert budget["fmnist_table_row"].startswith("| 10 | 0.05 min | USB fixmatch")
    text = section(doc, "usb")
    assert "Step rate" in text and "USB's FixMatch in a budget" in text  # both modes in one section
    assert_tables(text)
    assert_reproducible(text, "usb_side_by_side.py")


@pytest.mark.slow
def test_cli_speed(tmp_path: Path):
    result, doc = run_script("cli_speed.py", ["--repeats", "1", "--no-warm"], tmp_path)
    rows = {r["command"]: r for r in result["rows"]}
    for command in (
        "python -m sesemi.train --help",
        "python -m sesemi.train --cfg job",
        "python -m sesemi.train --info",
    ):
        assert rows[command]["median_wall_s"] > 0 and rows[command]["median_cpu_s"] > 0
    tabs = [r for r in result["rows"] if "line" in r]
    assert [r["line"] for r in tabs] == ["sesemi-train ", "sesemi-train method=", "sesemi-train optimizer."]
    assert "method=fixmatch" in tabs[1]["candidates"] and "optimizer.lr=" in tabs[2]["candidates"]
    assert all(r["heavy_imported"] == [] for r in result["rows"])  # not a timing: what each command imported
    text = section(doc, "cli_speed")
    assert_tables(text)
    assert_reproducible(text, "cli_speed.py")


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (scripts/slurm_cluster.sh start)")
def test_packing(tmp_path: Path):
    args = ["--points", "2", "--per-job", "1", "2", "--repeats", "1", "--steps", "3"]
    result, doc = run_script("packing.py", args, tmp_path, timeout=600)
    rows = {r["per_job"]: r for r in result["results"]}
    assert rows[1]["jobs"] == 2 and rows[2]["jobs"] == 1  # one point per job, then both points in one job
    assert all(r["returncode"] == 0 and r["completed"] == 2 and r["points_per_hour"] > 0 for r in rows.values())
    assert result["command"] == "python benchmarks/packing.py " + " ".join(args)
    text = section(doc, "packing")
    assert_tables(text)
    assert_reproducible(text, "packing.py")
