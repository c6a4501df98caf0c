"""docs/cluster.md's table of faults ("After a fault"): every test a row names exists, and every command a row tells
the user to run next is run by one of them (its module, options and keys in that test's source)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cluster.md"


def fault_rows() -> list[list[str]]:
    section = DOC.read_text().split("## After a fault", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| fault ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def source_of(reference: str) -> str:
    """The source of ``tests/...py::test_name``."""
    path, name = reference.split("::")
    tree = ast.parse((ROOT / path).read_text())
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    return ast.get_source_segment((ROOT / path).read_text(), node) or ""


# How the tests run a module other than the training app: the module's name, or their helper that runs it.
RUNNERS = {"sesemi.status": ("sesemi.status", "status_cli(")}


def words_a_test_must_run(command: str) -> list[str]:
    """What of a documented command a test's source shows when it runs it: the module (other than the training app,
    which ``run_cli`` and ``_start`` run), its options, and the keys of its overrides (the values are placeholders)."""
    words = []
    for word in re.sub(r"<[^>]*>", "<>", command).split():
        if word in ("python", "-m", "sesemi.train") or word.startswith("<"):
            continue
        words.append(word.split("=", 1)[0] + "=" if "=" in word else word)
    return words


def test_each_fault_names_the_tests_that_run_it_and_its_next_commands():
    rows = fault_rows()
    assert len(rows) >= 10
    for fault, _says, then, tested_by in rows:
        references = re.findall(r"`(tests/[^`]+::[^`]+)`", tested_by)
        assert references, f"{fault}: no test named"
        sources = "".join(source_of(ref) for ref in references)
        for command in re.findall(r"`(python -m [^`]+)`", then):
            for word in words_a_test_must_run(command):
                shown = RUNNERS.get(word, (word.rstrip("="),))  # a key may come from a pasted Fix
                assert any(w in sources for w in shown), (
                    f"{fault}: {word!r} of `{command}` is run by none of {references}"
                )


def test_each_fault_of_a_sweep_trial_names_the_tests_that_run_it():
    """docs/sweeps.md's table of what a trial does at each fault: every test a row names exists (a row without a test
    says why: the test cluster has one node)."""
    section = (ROOT / "docs" / "sweeps.md").read_text().split("## Stopped, lost and failed trials", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| fault ")]
    assert len(rows) >= 8
    named = set()
    for row in rows:
        fault, *_, tested_by = (cell.strip() for cell in row.strip("|").split(" | "))
        references = re.findall(r"`(tests/[^`]+::[^`]+)`", tested_by)
        assert references or tested_by.startswith("not on the one-node test cluster"), f"{fault}: no test named"
        for reference in references:
            assert source_of(reference), reference
        named.update(references)
    assert (
        "tests/sweep/test_sweep_preemption.py::test_async_trials_continue_across_time_limits_a_kill_and_a_requeue"
        in named
    )
