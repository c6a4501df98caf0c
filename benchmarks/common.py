"""Shared helpers of the benchmark scripts: machine facts, medians, JSON results, doc sections, RSS of a process tree.

The scripts are plain Python (not part of CI): each writes ``benchmarks/results/<name>.json`` and rewrites only its
own section of ``docs/benchmarks.md``, between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, with the exact
command that reproduces it. Machines are noisy (these numbers come from a shared 2-core box), so every ratio is
measured within one run, A/B repetitions are interleaved, and each figure is a median with the load average next
to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def load() -> float:
    """The 1-minute load average (other jobs on a shared machine make timings noisy; it is recorded with each)."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import pytorch_lightning

        info["pytorch_lightning"] = pytorch_lightning.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (linear interpolation); a low one is the cost least disturbed by other processes."""
    values = sorted(values)
    if not values:
        return float("nan")
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces a result, run from the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, args)])


def add_results_args(parser: argparse.ArgumentParser, name: str) -> None:
    """The arguments of a script whose invocations add to one results file (``benchmarks/results/<name>.json``) and
    whose doc section lists every command that contributed to it."""
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--commands", type=Path, default=RESULTS / f"{name}_commands.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.limit_test_batches=2")
    parser.add_argument("--table-only", action="store_true", help="rewrite the doc's table from --out, train nothing")


def publish(
    args: argparse.Namespace,
    section: str,
    heading: str,
    table: Callable[[list[dict], str], str],
    results: list[dict] | None = None,
) -> None:
    """Rewrite ``section`` of the doc from ``results`` and add this invocation to the recorded commands; with
    ``results`` None (``--table-only``), from the results file and the commands already recorded."""
    commands = json.loads(args.commands.read_text()) if args.commands.exists() else []
    if results is None:
        results = json.loads(args.out.read_text())
    else:
        commands = sorted({*commands, command_line(Path(sys.argv[0]).name)})
        write_json(args.commands, commands)
    write_section(args.doc, section, heading, table(results, "\n".join(commands)))


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def write_section(doc: Path, name: str, heading: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc`` (other sections, and
    text outside the markers, are left alone); append ``## heading`` and the block when the markers are missing.

    The file is read right before it is written (other scripts and people edit the same file)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n{block}\n"
    tmp = doc.with_name(f".{doc.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(doc)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def reproduce(command: str) -> str:
    return f"Reproduce (from the repository root):\n\n```bash\n{command}\n```"


# ---------------------------------------------------------------------------------------------------------------
# Memory of a process tree, from /proc (no psutil needed).


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    return tree


def _rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; PSS splits pages shared with forked workers among them."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return rss, pss


def run_with_memory(
    cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None, interval: float = 0.1, timeout: float = 1800
) -> dict[str, Any]:
    """Run ``cmd`` and poll its process tree: the peak of the summed RSS and PSS over all its processes, the peak
    RSS of the largest single process, and the most processes alive at once."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak_rss = peak_pss = peak_one = peak_n = 0
    started = time.perf_counter()
    while proc.poll() is None:
        pids = process_tree(proc.pid)
        sizes = [_rollup(p) for p in pids]
        peak_rss = max(peak_rss, sum(s[0] for s in sizes))
        peak_pss = max(peak_pss, sum(s[1] for s in sizes))
        peak_one = max([peak_one, *(s[0] for s in sizes)])
        peak_n = max(peak_n, sum(1 for s in sizes if s[0]))
        if time.perf_counter() - started > timeout:
            proc.kill()
            break
        time.sleep(interval)
    output = proc.communicate()[0]
    return {
        "returncode": proc.returncode,
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_tree_rss_mib": round(peak_rss / 2**20, 1),
        "peak_tree_pss_mib": round(peak_pss / 2**20, 1),
        "peak_single_rss_mib": round(peak_one / 2**20, 1),
        "max_processes": peak_n,
        "output_tail": output[-3000:],
    }
