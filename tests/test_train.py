"""``sesemi.train``'s own command line, before any job runs: ``--help``, ``--cfg job``, ``--info`` and each TAB of
shell completion import no torch, Lightning, Optuna or submitit (checked on the modules the real command imports, not
on timings: ``benchmarks/cli_speed.py`` times them), and completion completes for real, through Hydra's bash
function as bash runs it, installed with the command the README gives."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

# What a job imports; none of it may be loaded to answer the command line.
HEAVY = ("torch", "pytorch_lightning", "lightning", "lightning_utilities", "torchvision", "optuna", "submitit")
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def imported(argv: list[str], cwd: Path, **env: str) -> tuple[set[str], str]:
    """Every module the command imports (``python -X importtime`` names each one as it is imported), and its stdout."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = {
        line.split("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") >= 2 and "self [us]" not in line
    }
    assert "hydra" in modules  # the listing is complete: it names what the app does import
    return modules, proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--cfg", "job"],
        ["--info"],
        ["--cfg", "job", "hparams_search=digits_fixmatch", "hydra/launcher=slurm"],  # a sweep's and a cluster's configs
    ],
    ids=["help", "cfg-job", "info", "cfg-job-sweep-on-slurm"],
)
def test_the_command_line_answers_without_torch_or_lightning(tmp_path: Path, args: list[str]):
    modules, out = imported(["-m", "sesemi.train", *args], tmp_path)
    assert out.strip()
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"python -m sesemi.train {' '.join(args)} imported {heavy[:10]}"


@pytest.mark.parametrize("line", ["sesemi-train ", "sesemi-train method=", "sesemi-train optimizer."])
def test_a_tab_imports_neither_torch_nor_lightning(tmp_path: Path, line: str):
    """What bash runs for a TAB: the console script with ``-sc query=bash`` and the line in COMP_LINE."""
    modules, out = imported(
        [str(BIN / "sesemi-train"), "-sc", "query=bash"], tmp_path, COMP_LINE=line, COMP_POINT=str(len(line))
    )
    assert out.split()
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"a TAB after {line!r} imported {heavy[:10]}"


def _complete(install: str, lines: list[str], cwd: Path) -> list[list[str]]:
    """In one bash: ``eval "$(<install>)"`` as the docs say, then each line completed as bash does at a TAB (Hydra's
    function with COMP_LINE, COMP_POINT and COMP_CWORD set); the candidates of each line."""
    script = [f'eval "$({install})"', "complete -p sesemi-train >/dev/null || exit 3"]
    for line in lines:
        cword = len(line.split()) if line.endswith(" ") else len(line.split()) - 1
        script += [
            f"COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}; COMP_CWORD={cword}; COMPREPLY=()",
            "hydra_bash_completion",
            'echo "${COMPREPLY[*]}"',
        ]
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", "\n".join(script)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = proc.stdout.splitlines()
    assert len(answers) == len(lines), proc.stdout
    return [a.split() for a in answers]


@pytest.mark.parametrize("install", ["sesemi-train -sc install=bash", "python -m sesemi.train -sc install=bash"])
def test_tab_completes_sesemi_train_for_real(tmp_path: Path, install: str):
    """Hydra's completion cannot complete ``python -m`` (its bash function gives up on ``-m``), so both install
    commands install the completion of the ``sesemi-train`` console script, the same app."""
    groups, methods, keys, chosen = _complete(
        install,
        ["sesemi-train ", "sesemi-train method=fix", "sesemi-train optimizer.l", "sesemi-train method=supervised mod"],
        tmp_path,
    )
    assert {"data=", "model=", "experiment=", "hparams_search="} <= set(groups)
    assert {"method=", "method"} & set(groups)  # "method" alone where the group holds a group (method/loss_head)
    assert methods == ["method=fixmatch", "method=fixmatch_rotation"]
    assert keys == ["optimizer.lr="]
    assert {"model=", "model."} <= set(chosen)


def test_python_m_install_says_what_it_completes(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.train", "-sc", "install=bash"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("-F hydra_bash_completion sesemi-train")
    assert "sesemi-train <TAB>" in proc.stderr


def test_the_readme_installs_completion_as_the_test_does():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert '\neval "$(sesemi-train -sc install=bash)"\n' in readme  # the first install of the test above
