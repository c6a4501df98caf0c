"""P5 the command line's own speed: ``python -m sesemi.train --help``, ``--cfg job``, ``--info`` and a TAB of shell
completion, each launched as a user launches it, from an empty workspace.

A TAB is what bash runs: Hydra's completion function (installed once with ``sesemi-train -sc install=bash``, whose
output is sourced from a file here) with ``COMP_LINE``/``COMP_POINT``/``COMP_CWORD`` set as bash sets them, which
runs ``sesemi-train -sc query=bash``; the candidates it printed are recorded with the timing. The commands alternate
(a rotating order per repetition); each figure is the median over the repetitions of the wall time and of the CPU
time (user + system of the process and everything it started). Two baselines put them in proportion: the bare
interpreter, and ``import hydra`` with Hydra's plugin discovery (what any Hydra app pays before composing a config).

Each command is also run once under ``python -X importtime``: the heavy packages it imported (torch, Lightning,
Optuna, submitit...: none expected before a job runs) and, for ``--help``, the import time per package.

    python benchmarks/cli_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
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

GOAL_S = 1.5
# Packages a command of the CLI must not import before a job runs (imported by a job: torch, Lightning; by a sweep:
# Optuna; by a cluster launch: submitit).
HEAVY = (
    "torch",
    "pytorch_lightning",
    "lightning",
    "lightning_utilities",
    "torchvision",
    "torchmetrics",
    "tensorboard",
    "numpy",
    "optuna",
    "submitit",
    "sqlalchemy",
    "plotly",
)
# (the line typed before the TAB, what it shows)
TABS = (
    ("sesemi-train ", "the config groups and top-level keys"),
    ("sesemi-train method=", "the methods"),
    ("sesemi-train optimizer.", "the optimizer's keys"),
)


def script(name: str) -> str:
    """A console script of this interpreter's environment (``.venv/bin/sesemi-train``)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: install sesemi into this environment (pip install -e .)")
    return str(path)


def tab_command(completion: Path, line: str) -> list[str]:
    """bash, with Hydra's completion function sourced, completing ``line`` as a TAB at its end would."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    body = (
        f"source {shlex.quote(str(completion))}\n"
        f"COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}; COMP_CWORD={cword}\n"
        "hydra_bash_completion\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    return ["bash", "--norc", "--noprofile", "-c", body]


def commands(completion: Path) -> list[dict[str, Any]]:
    py = sys.executable
    listed = [
        {"name": "python -c pass", "argv": [py, "-c", "pass"], "baseline": True},
        {
            "name": "import hydra + plugin discovery",
            "argv": [py, "-c", "import hydra; from hydra.core.plugins import Plugins; Plugins.instance()"],
            "baseline": True,
        },
        {"name": "python -m sesemi.train --help", "argv": [py, "-m", "sesemi.train", "--help"]},
        {"name": "python -m sesemi.train --cfg job", "argv": [py, "-m", "sesemi.train", "--cfg", "job"]},
        {"name": "python -m sesemi.train --info", "argv": [py, "-m", "sesemi.train", "--info"]},
    ]
    for line, shows in TABS:
        listed.append(
            {"name": f"TAB after `{line}`", "argv": tab_command(completion, line), "tab": line, "shows": shows}
        )
    return listed


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the process tree, stdout) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def importtime(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Self import time per top-level package (s) of one run under ``python -X importtime``."""
    env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}  # reaches the python that bash starts too
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    per_package: dict[str, float] = defaultdict(float)
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) < 3 or "self [us]" in line:
            continue
        name = parts[2].strip()
        top = ".".join(name.split(".")[:2]) if name.startswith(("hydra_plugins", "sesemi")) else name.split(".")[0]
        per_package[top] += int(parts[0].split(":")[1]) / 1e6
    return dict(sorted(per_package.items(), key=lambda kv: -kv[1]))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sesemi-cli-speed-") as tmp:
        cwd = Path(tmp)  # an empty workspace: no configs/ of its own
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        completion = cwd / "sesemi-train.bash"
        _, _, text = timed([script("sesemi-train"), "-sc", "install=bash"], cwd, env)
        completion.write_text(text)
        listed = commands(completion)
        if args.warm:  # the page cache, for every command alike
            for c in listed:
                timed(c["argv"], cwd, env)
        walls: dict[str, list[float]] = defaultdict(list)
        cpus: dict[str, list[float]] = defaultdict(list)
        outputs: dict[str, str] = {}
        loads = [load()]
        for rep in range(args.repeats):
            shift = rep % len(listed)
            for c in listed[shift:] + listed[:shift]:
                wall, cpu, out = timed(c["argv"], cwd, env)
                walls[c["name"]].append(wall)
                cpus[c["name"]].append(cpu)
                outputs[c["name"]] = out
            loads.append(load())
            print(
                f"rep {rep}: "
                + ", ".join(f"{c['name']} {walls[c['name']][-1]:.2f} s" for c in listed)
                + f" (load {loads[-1]})",
                file=sys.stderr,
                flush=True,
            )
        rows = []
        for c in listed:
            row: dict[str, Any] = {
                "command": c["name"],
                "baseline": bool(c.get("baseline")),
                "wall_s": walls[c["name"]],
                "cpu_s": cpus[c["name"]],
                "median_wall_s": median(walls[c["name"]]),
                "median_cpu_s": median(cpus[c["name"]]),
            }
            if "tab" in c:
                row["line"] = c["tab"]
                row["shows"] = c["shows"]
                row["candidates"] = outputs[c["name"]].split()
            if args.importtime:
                packages = importtime(c["argv"], cwd, env)
                row["heavy_imported"] = [p for p in HEAVY if p in packages]
                if c["name"] == "python -m sesemi.train --help":
                    row["import_s_by_package"] = packages
            rows.append(row)
    return {"repeats": args.repeats, "goal_s": GOAL_S, "loads": loads, "rows": rows}


def table(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    checked = [r for r in result["rows"] if not r["baseline"]]
    met = all(r["median_wall_s"] <= result["goal_s"] for r in checked)
    met_cpu = all(r["median_cpu_s"] <= result["goal_s"] for r in checked)
    slowest = max(checked, key=lambda r: r["median_wall_s"])
    costliest = max(checked, key=lambda r: r["median_cpu_s"])

    def cells(r: dict[str, Any]) -> list[str]:
        name = f"`{r['command']}`" if not r["command"].startswith("TAB") else r["command"]
        if "candidates" in r:
            shown = " ".join(r["candidates"][:4]) + (" ..." if len(r["candidates"]) > 4 else "")
            name += f" ({len(r['candidates'])} candidates: `{shown}`)"
        heavy = "-" if "heavy_imported" not in r else (", ".join(r["heavy_imported"]) or "none")

        def verdict(seconds: float) -> str:
            return "(baseline)" if r["baseline"] else ("yes" if seconds <= result["goal_s"] else "**no**")

        wall, cpu = r["median_wall_s"], r["median_cpu_s"]
        return [name, f"{wall:.2f} s", f"{cpu:.2f} s", heavy, verdict(wall), verdict(cpu)]

    lines = [
        (
            f"Medians of {result['repeats']} rotating runs of each command from an empty workspace ({m['cpu_count']} "
            f"cores shared with other jobs; load average {min(result['loads']):.1f} - {max(result['loads']):.1f}; "
            f"Python {m['python']}). CPU: user + system time of the process and its children. A TAB is bash running "
            "Hydra's completion function, which runs `sesemi-train -sc query=bash`."
        ),
        "",
        markdown_table(
            [
                "command",
                "wall (median)",
                "CPU (median)",
                "heavy packages imported",
                f"wall <= {result['goal_s']} s",
                f"CPU <= {result['goal_s']} s",
            ],
            [cells(r) for r in result["rows"]],
        ),
        "",
        (
            f"Goal (each command <= {result['goal_s']} s wall): **{'met' if met else 'not met'}** at this load; the "
            f"slowest is {slowest['command'].replace('`', '')} at {slowest['median_wall_s']:.2f} s. By CPU time (what "
            f"a command costs whatever else runs): **{'met' if met_cpu else 'not met'}**, the costliest is "
            f"{costliest['command'].replace('`', '')} at {costliest['median_cpu_s']:.2f} s."
        ),
    ]
    helped = next((r for r in result["rows"] if "import_s_by_package" in r), None)
    if helped:
        top = list(helped["import_s_by_package"].items())[:12]
        lines += [
            "",
            (
                "Imports of `--help` (one `python -X importtime` run, self time per package; inflated by the profiler, "
                "so only the proportions matter):"
            ),
            "",
            markdown_table(["package", "import time"], [[f"`{k}`", f"{v:.3f} s"] for k, v in top]),
        ]
    lines += ["", reproduce(command)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-warm", dest="warm", action="store_false", help="skip the untimed first run of each")
    parser.add_argument("--no-importtime", dest="importtime", action="store_false", help="skip the -X importtime runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_speed.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--table-only", action="store_true", help="rewrite the doc's section from --out, run nothing")
    args = parser.parse_args()
    if args.table_only:
        result = json.loads(args.out.read_text())
    else:
        result = measure(args)
        result["machine"] = machine()
        result["command"] = command_line("cli_speed.py")
        write_json(args.out, result)
    text = table(result, result["command"])
    if not args.no_doc:
        write_section(args.doc, "cli_speed", "Performance P5: the command line's own speed", text)
    print(text)


if __name__ == "__main__":
    main()
