"""P2 start-up: wall time from ``python -m sesemi.train`` to the end of the first optimizer step, minus the wall time
of ``python -c "import pytorch_lightning"`` (the floor every Lightning app pays).

The training command is the real CLI with the default config, launched from an empty workspace whose ``src/``
holds a probe callback (``+callbacks.startup_probe=...``, sesemi's plug-in path for user code): the probe writes
the wall-clock time of a few milestones to a file and ends the process right after the first optimizer step, so
no validation or checkpoint time is counted. The two commands alternate; the figure is the difference of medians.

A breakdown comes with it: the milestones (Trainer built, fit started, first batch fetched, first step done), and
from one ``python -X importtime`` run of each command, the import time of the packages the training command loads on
top of ``import pytorch_lightning``.

    python benchmarks/startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DOC,
    RESULTS,
    command_line,
    load,
    machine,
    markdown_table,
    median,
    reproduce,
    write_json,
    write_section,
)

HEAVY = [
    "tensorboard",
    "torch.utils.tensorboard",
    "sklearn",
    "scipy",
    "torchvision.models",
    "optuna",
    "submitit",
    "timm",
    "pandas",
    "matplotlib",
    "sqlalchemy",
    "psycopg2",
    "plotly",
    "cloudpickle",
    "torch._dynamo",
    "torch._inductor",
]

PROBE = '''
"""Start-up probe: milestone times to $SESEMI_STARTUP_PROBE, then exit after the first optimizer step."""
import json, os, sys, time

import pytorch_lightning as pl

HEAVY = {heavy!r}


class FirstStepProbe(pl.Callback):
    def __init__(self):
        self.times = {"callbacks_built": time.time()}

    def setup(self, trainer, pl_module, stage):
        self.times.setdefault("setup", time.time())

    def on_train_start(self, trainer, pl_module):
        self.times["train_start"] = time.time()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.times.setdefault("first_batch", time.time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times["first_step"] = time.time()
        record = {"times": self.times, "imported": [m for m in HEAVY if m in sys.modules],
                  "modules": len(sys.modules)}
        with open(os.environ["SESEMI_STARTUP_PROBE"], "w") as f:
            json.dump(record, f)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
'''

MILESTONES = [
    ("callbacks_built", "config composed, data and model built, Trainer callbacks built"),
    ("setup", "Trainer built, fit started (setup hook)"),
    ("train_start", "optimizer configured, train loop starting"),
    ("first_batch", "data loader workers started, first batch fetched"),
    ("first_step", "first optimizer step done"),
]


def workspace(root: Path) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "sesemi_bench_probe.py").write_text(PROBE.replace("{heavy!r}", repr(HEAVY)))
    return root


def train_command(extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sesemi.train",
        "+callbacks.startup_probe._target_=sesemi_bench_probe.FirstStepProbe",
        *extra,
    ]


IMPORT_PL = ["-c", "import pytorch_lightning"]
# The same import, reporting when it is done (before the interpreter's exit, which the literal command includes and
# the training command, ended by the probe's os._exit, does not) and which heavy packages it loads itself.
IMPORT_PL_TIMED = [
    "-c",
    (
        "import time, sys, json; import pytorch_lightning; "
        "print(json.dumps({'t': time.time(), 'modules': sorted(sys.modules)}))"
    ),
]


def time_import(python_args: list[str], cwd: Path) -> float:
    started = time.time()
    subprocess.run([sys.executable, *python_args], cwd=cwd, check=True, capture_output=True)
    return time.time() - started


def time_import_done(cwd: Path) -> tuple[float, list[str]]:
    """(seconds from launch until ``import pytorch_lightning`` is done, modules it loaded)."""
    started = time.time()
    proc = subprocess.run([sys.executable, *IMPORT_PL_TIMED], cwd=cwd, check=True, capture_output=True, text=True)
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    return record["t"] - started, record["modules"]


def time_train(extra: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    probe = cwd / f"probe_{time.time_ns()}.json"
    started = time.time()
    proc = subprocess.run(
        train_command(extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**env, "SESEMI_STARTUP_PROBE": str(probe)},
    )
    ended = time.time()
    if not probe.is_file():
        raise RuntimeError(
            f"sesemi.train exited {proc.returncode} without reaching a first step:\n{proc.stderr[-3000:]}"
        )
    record = json.loads(probe.read_text())
    probe.unlink()
    record["offsets"] = {k: v - started for k, v in record["times"].items()}
    record["to_first_step_s"] = record["offsets"]["first_step"]
    record["process_s"] = ended - started
    return record


def _importtime(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, int]:
    """{module: self time in microseconds} from ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=cwd, capture_output=True, text=True, check=False, env=env
    )
    out: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            out[m.group(4)] = int(m.group(1))
    return out


def import_breakdown(extra: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Import self-time (s) per top-level package of what the training command imports beyond pytorch_lightning."""
    base = _importtime(["-c", "import pytorch_lightning"], cwd, env)
    probe = cwd / "probe_importtime.json"
    train = _importtime(train_command(extra)[1:], cwd, {**env, "SESEMI_STARTUP_PROBE": str(probe)})
    groups: dict[str, float] = defaultdict(float)
    for module, us in train.items():
        if module not in base:
            top = module.split(".")[0]
            if module.startswith("torch.utils.tensorboard"):
                top = "torch.utils.tensorboard"
            elif module.startswith("torchvision."):
                top = ".".join(module.split(".")[:2])
            groups[top] += us / 1e6
    return dict(sorted(((k, round(v, 3)) for k, v in groups.items()), key=lambda kv: -kv[1]))


def measure(args) -> dict[str, Any]:
    env = {**os.environ, "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "")}
    with tempfile.TemporaryDirectory(prefix="sesemi-startup-") as tmp:
        cwd = workspace(Path(tmp))
        if args.warm:  # warm the page cache for both commands
            time_train(args.overrides, cwd, env)
            time_import(IMPORT_PL, cwd)
        imports, imports_done, trains, loads = [], [], [], []
        baseline_modules: list[str] = []
        for rep in range(args.repeats):
            kinds = ["import", "import_done", "train"]
            for kind in kinds[rep % 3 :] + kinds[: rep % 3]:
                if kind == "import":
                    imports.append(time_import(IMPORT_PL, cwd))
                elif kind == "import_done":
                    done, baseline_modules = time_import_done(cwd)
                    imports_done.append(done)
                else:
                    trains.append(time_train(args.overrides, cwd, env))
            loads.append(load())
            print(
                f"rep {rep}: python -c 'import pytorch_lightning' {imports[-1]:.2f} s (import done at "
                f"{imports_done[-1]:.2f} s), sesemi.train first step {trains[-1]['to_first_step_s']:.2f} s "
                f"(load {loads[-1]})",
                file=sys.stderr,
                flush=True,
            )
        breakdown = import_breakdown(args.overrides, cwd, env) if args.importtime else {}
    milestones = {k: median(t["offsets"][k] for t in trains) for k, _ in MILESTONES}
    result = {
        "repeats": args.repeats,
        "overrides": args.overrides,
        "import_pl_s": imports,
        "to_first_step_s": [t["to_first_step_s"] for t in trains],
        "median_import_pl_s": median(imports),
        "import_pl_done_s": imports_done,
        "median_import_pl_done_s": median(imports_done),
        "median_to_first_step_s": median(t["to_first_step_s"] for t in trains),
        "loads": loads,
        "milestones_median_s": milestones,
        "heavy_modules_loaded_at_first_step": trains[-1]["imported"],
        "heavy_modules_beyond_pytorch_lightning": [m for m in trains[-1]["imported"] if m not in baseline_modules],
        "modules_loaded_at_first_step": trains[-1]["modules"],
        "import_breakdown_s": breakdown,
    }
    result["startup_minus_import_s"] = result["median_to_first_step_s"] - result["median_import_pl_s"]
    result["startup_minus_import_done_s"] = result["median_to_first_step_s"] - result["median_import_pl_done_s"]
    return result


def table(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    overhead, overhead_done = result["startup_minus_import_s"], result["startup_minus_import_done_s"]

    def verdict(x: float) -> str:
        return "met" if x <= 1.0 else "**not met**"

    rows = [
        ['`python -c "import pytorch_lightning"` (launch to exit)', f"{result['median_import_pl_s']:.2f} s"],
        ["the same import, launch to import done (no interpreter exit)", f"{result['median_import_pl_done_s']:.2f} s"],
        [
            "`python -m sesemi.train` to the end of the first optimizer step",
            f"{result['median_to_first_step_s']:.2f} s",
        ],
        [
            "**difference to the literal import command** (the goal's definition)",
            f"**{overhead:+.2f} s** (goal <= 1.0 s: {verdict(overhead)})",
        ],
        [
            "**difference to the import being done** (sesemi's own start-up, interpreter exit left out)",
            f"**{overhead_done:+.2f} s** (goal <= 1.0 s: {verdict(overhead_done)})",
        ],
    ]
    lines = [
        (
            f"Medians of {result['repeats']} rotating runs of each command, default config "
            f"({m['cpu_count']} cores shared with other jobs; load average {min(result['loads']):.1f} – "
            f"{max(result['loads']):.1f}; Python {m['python']}, torch {m['torch']}, "
            f"Lightning {m.get('pytorch_lightning')})."
        ),
        "",
        markdown_table(["command", "wall time (median)"], rows),
        "",
        "Where the time to the first step goes (median offsets from the launch):",
        "",
        markdown_table(
            ["milestone", "at"], [[text, f"{result['milestones_median_s'][key]:.2f} s"] for key, text in MILESTONES]
        ),
    ]
    if result["import_breakdown_s"]:
        top = list(result["import_breakdown_s"].items())[:12]
        lines += [
            "",
            (
                "Imports on top of `import pytorch_lightning` (one `python -X importtime` run, self time per package; "
                "inflated by the profiler, so only the proportions matter):"
            ),
            "",
            markdown_table(["package", "import time"], [[f"`{k}`", f"{v:.3f} s"] for k, v in top]),
        ]
    lines += [
        "",
        "Heavy packages loaded at the first step beyond those `import pytorch_lightning` loads itself: "
        + (", ".join(f"`{x}`" for x in result["heavy_modules_beyond_pytorch_lightning"]) or "none")
        + "; not loaded at all: "
        + ", ".join(f"`{x}`" for x in HEAVY if x not in result["heavy_modules_loaded_at_first_step"])
        + ".",
        "",
        reproduce(command),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-warm", dest="warm", action="store_false", help="skip the untimed first run of each")
    parser.add_argument(
        "--no-importtime", dest="importtime", action="store_false", help="skip the -X importtime breakdown"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides of the training command")
    args = parser.parse_args()
    result = measure(args)
    result["machine"] = machine()
    result["command"] = command_line("startup.py")
    write_json(args.out, result)
    text = table(result, result["command"])
    print(text)
    if not args.no_doc:
        write_section(args.doc, "P2", "Performance P2: start-up", text)


if __name__ == "__main__":
    main()
