"""docs/cluster.md shows only commands the cluster tests run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from cluster_testkit import DOC_COMMANDS, MYCLUSTER_PROFILE

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"

# Commands that are not `python -m sesemi.train ...`, and the test that runs each.
OTHER_COMMANDS = {
    "python -m sesemi.cluster.summary runs/lr_scan/<timestamp>": "test_summary_command_reads_a_sweep_dir_again",
    "sacct -X -n -P -o JobID,State -j <job ids>": (
        "test_two_point_sweep_gives_two_slurm_jobs_and_two_completed_run_dirs"
    ),
    "python -m sesemi.status runs/lr_scan/<timestamp>": (
        "test_a_detached_sweep_returns_while_its_jobs_pend_and_status_wait_follows_them"
    ),
    "python -m sesemi.status runs/lr_scan/<timestamp> --wait": (
        "test_a_detached_sweep_returns_while_its_jobs_pend_and_status_wait_follows_them"
    ),
    "python -m sesemi.status runs/lr_scan/<timestamp> --resubmit hydra.launcher.timeout_min=30": (
        "test_a_cancelled_point_is_resubmitted_and_completes_in_its_own_run_dir"
    ),
    "scripts/slurm_cluster.sh start --nodes 2": "test_start_with_two_nodes_gives_two_nodes_in_namespaces_of_their_own",
    "scripts/slurm_cluster.sh start": "test_plain_start_returns_to_the_single_node",
    # tests/sweep/test_sweep_detached.py (DETACHED_ASYNC: checked there against this page and docs/sweeps.md)
    "python -m sesemi.train -m hparams_search=digits_fixmatch hydra/sweeper=optuna_async hydra.sweeper.workers=2 "
    "hydra.sweeper.n_trials=4 hydra/launcher=slurm_cpu hydra.launcher.partition=debug hydra.launcher.wait=false": (
        "test_a_detached_async_sweep_finishes_its_budget_with_the_submitting_process_gone"
    ),
    "python -m sesemi.status runs/sweeps/digits_fixmatch --wait": (
        "test_a_detached_async_sweep_finishes_its_budget_with_the_submitting_process_gone"
    ),
    "python -m sesemi.sweep_report runs/sweeps/digits_fixmatch": (
        "test_a_detached_async_sweep_finishes_its_budget_with_the_submitting_process_gone"
    ),
}
SWEEP_DOC = DOC.parent / "sweeps.md"


def shown_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_command_in_the_cluster_docs_is_run_by_a_test():
    run_by_tests = {shlex.join(["python", "-m", "sesemi.train", *args]) for args in DOC_COMMANDS.values()}
    commands = shown_commands()
    assert len(commands) >= 10
    for command in commands:
        assert command in run_by_tests or command in OTHER_COMMANDS, f"no test runs: {command}"
    here = Path(__file__).parent
    files = [
        *here.glob("test_cluster_*.py"),
        *here.glob("test_status_*.py"),
        here.parent / "sweep" / "test_sweep_detached.py",
    ]
    tests = "".join(p.read_text() for p in files if p != Path(__file__))
    for test in OTHER_COMMANDS.values():
        assert f"def {test}(" in tests, test
    # Every documented sesemi.train command is used by a test (none is only in DOC_COMMANDS).
    for name in DOC_COMMANDS:
        assert f'DOC_COMMANDS["{name}"]' in tests or f'"{name}"' in tests, name


def test_the_docs_mention_the_inline_requeue_and_cancel_commands_the_tests_use():
    text = DOC.read_text()
    assert "`scontrol requeue <job id>`" in text and "`scancel <job id>`" in text
    slurm_tests = (Path(__file__).parent / "test_cluster_slurm.py").read_text()
    assert '_signal_when_checkpointed(["scontrol", "requeue"])' in slurm_tests
    assert '_signal_when_checkpointed(["scancel"])' in slurm_tests


def test_the_docs_profile_example_is_the_tested_one():
    assert f"```yaml\n{MYCLUSTER_PROFILE}```" in DOC.read_text()


def test_the_sweeps_page_shows_the_detached_commands_of_this_page():
    blocks = re.findall(r"```bash\n(.*?)```", SWEEP_DOC.read_text(), flags=re.DOTALL)
    detached = [block for block in blocks if "hydra.launcher.wait=false" in block]
    assert len(detached) == 1
    for line in detached[0].strip().splitlines():
        assert line in shown_commands() and line in OTHER_COMMANDS, line
