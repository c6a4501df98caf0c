"""Memory: peak resident memory of the default CPU run and of a 2-process CPU DDP run.

Each command is the real CLI, polled every 0.1 s through /proc: the peak over the run of the summed RSS of the whole
process tree (training process(es) and their data-loader workers), the same for PSS (pages shared between a process
and the workers it forked are counted once, split among them: the memory the run really takes), and the peak RSS
of the largest single process. The default run is ``python -m sesemi.train`` (FixMatch on digits: 2 data-loader
workers per training loader, persistent); the DDP run adds ``run.accelerator=cpu run.devices=2`` (Lightning starts
the second rank as a second ``python -m sesemi.train``, each rank with its own workers).

    python benchmarks/memory.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
    run_with_memory,
    write_json,
    write_section,
)

RUNS = {
    "default CPU run": [],
    "2-process CPU DDP": ["run.accelerator=cpu", "run.devices=2"],
}
# For scale: what the interpreter holds after `import pytorch_lightning` alone (one process).
BASELINE = [sys.executable, "-c", "import time, pytorch_lightning; time.sleep(1)"]


def measure(args) -> dict[str, Any]:
    out: dict[str, list[dict]] = {name: [] for name in RUNS}
    with tempfile.TemporaryDirectory(prefix="sesemi-memory-") as tmp:
        for _rep in range(args.repeats):
            for name, extra in RUNS.items():
                cmd = [sys.executable, "-m", "sesemi.train", *extra, *args.overrides]
                if args.steps:
                    cmd += [f"trainer.max_steps={args.steps}"]
                r = run_with_memory(cmd, Path(tmp))
                if r["returncode"] != 0:
                    raise RuntimeError(f"{' '.join(cmd)} exited {r['returncode']}:\n{r['output_tail']}")
                r["load"] = load()
                r.pop("output_tail")
                out[name].append(r)
                print(
                    f"{name}: tree RSS {r['peak_tree_rss_mib']:.0f} MiB, PSS {r['peak_tree_pss_mib']:.0f} MiB, "
                    f"largest process {r['peak_single_rss_mib']:.0f} MiB, {r['max_processes']} processes, "
                    f"{r['wall_s']:.0f} s (load {r['load']})",
                    file=sys.stderr,
                    flush=True,
                )
        base = run_with_memory(BASELINE, Path(tmp))
        base["load"] = load()
        base.pop("output_tail")
    summary = {
        "import pytorch_lightning (for scale)": {
            "runs": [base],
            "overrides": None,
            **{
                k: base[k]
                for k in ("peak_tree_rss_mib", "peak_tree_pss_mib", "peak_single_rss_mib", "max_processes", "wall_s")
            },
        }
    }
    for name, runs in out.items():
        summary[name] = {
            "runs": runs,
            "overrides": RUNS[name],
            **{
                k: median(r[k] for r in runs)
                for k in ("peak_tree_rss_mib", "peak_tree_pss_mib", "peak_single_rss_mib", "max_processes", "wall_s")
            },
        }
    return summary


def table(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    steps = f"trainer.max_steps={result['steps']}" if result["steps"] else "the default 600 steps"
    rows = []
    for name, s in result["runs"].items():
        cmd = (
            'python -c "import pytorch_lightning"'
            if s["overrides"] is None
            else " ".join(["python -m sesemi.train", *s["overrides"]])
        )
        rows.append(
            [
                name,
                f"`{cmd}`",
                f"{s['peak_tree_pss_mib']:.0f} MiB",
                f"{s['peak_tree_rss_mib']:.0f} MiB",
                f"{s['peak_single_rss_mib']:.0f} MiB",
                f"{s['max_processes']:.0f}",
                f"{s['wall_s']:.0f} s",
            ]
        )
    return "\n".join(
        [
            (
                f"Median of {result['repeats']} run(s) each, {steps}, torch {m['torch']}, "
                f"Lightning {m.get('pytorch_lightning')}"
                f" ({m['cpu_count']} shared cores). Process tree = training process(es) + data-loader workers."
            ),
            "",
            markdown_table(
                [
                    "run",
                    "command",
                    "peak PSS, process tree",
                    ("peak RSS, process tree (shared pages counted per process)"),
                    "peak RSS, largest process",
                    "processes",
                    "wall time",
                ],
                rows,
            ),
            "",
            reproduce(command),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=0, help="trainer.max_steps (0: the config's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides of both commands")
    args = parser.parse_args()
    result = {
        "machine": machine(),
        "repeats": args.repeats,
        "steps": args.steps,
        "runs": measure(args),
        "command": command_line("memory.py"),
    }
    write_json(args.out, result)
    text = table(result, result["command"])
    print(text)
    if not args.no_doc:
        write_section(args.doc, "memory", "Performance: memory", text)


if __name__ == "__main__":
    main()
