"""Several sweep points in one job: ``hydra.launcher.points_per_job=K``.

A grid's points (or a synchronous Optuna batch's trials) of equal resources are submitted K to a job: each job of
the array carries K points, runs each as a process of its own in its own run dir, and returns their K results. For
small models whose step does not fill an allocation, K points share one allocation's GPUs and CPUs instead of each
waiting for one of its own.

How a job shares its resources (``hydra.launcher.cpus_per_task`` and ``gpus_per_node`` are the job's, not a
point's):

- GPUs (:func:`gpus_for`): ``point_gpus=split`` (default) gives process i the job's GPU ``i mod G`` (its
  ``CUDA_VISIBLE_DEVICES``): one GPU each when the job has K of them, shared round robin when it has fewer;
  ``shared`` shows every process all of the job's GPUs.
- CPUs (:func:`threads_for`): every process gets ``point_threads`` torch/OpenMP threads (``OMP_NUM_THREADS``,
  ``MKL_NUM_THREADS``); null: the job's CPUs divided by K, at least 1. Data loader workers are each point's own
  (``data.num_workers``).

The job side: the job's process (:func:`run_points`, the submitit job) starts one process per point, each the
launcher's one-point job side (:class:`sesemi.cluster.submission.SharedJob`: compose, run the training app through
:mod:`sesemi.cluster.job_runner`), and waits for all of them; a point that fails does not stop the others. Each
point's output goes to ``<job folder>/<job id>_point<num>_log.out|err`` and its result to a pickle beside it.

Preemption and time limits: each point's training owns its signals as any run does (:mod:`sesemi.cluster.signals`:
checkpoint at the end of the step, ``requeued`` in its ``status.json``). The job process forwards SIGTERM and, on
SLURM, submitit's signal to every point, waits until each has stopped, and then lets submitit requeue the job once
for all of them. The requeued job starts the points again, except those that ended (their result pickle is kept):
each continues from its own checkpoint (:func:`sesemi.cluster.signals.restart_checkpoint`), as its own run.
A point's process holds these signals from its first instant and hands them to its run once the run owns them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesemi.atomic import replacing
from sesemi.errors import ConfigError

GPU_MODES = ("split", "shared")
POINT_ENV = "SESEMI_PACKED_POINT"  # in each point's process: its sweep job number


@dataclass(frozen=True)
class Packing:
    """``hydra.launcher.points_per_job``, ``point_gpus`` and ``point_threads`` of a planned job."""

    points_per_job: int = 1
    gpus: str = "split"
    threads: int | None = None  # per point; None: the job's CPUs // points_per_job

    @classmethod
    def of(cls, launcher: Mapping[str, Any]) -> Packing:
        """From a job's resolved ``hydra.launcher``; a bad value is a :class:`ConfigError` naming its key."""
        k, gpus, threads = (launcher.get(key) for key in ("points_per_job", "point_gpus", "point_threads"))
        k = 1 if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(
                "hydra.launcher.points_per_job", f"is {k!r}", "set a whole number >= 1 (1: one point per job)"
            )
        gpus = gpus or "split"
        if gpus not in GPU_MODES:
            raise ConfigError("hydra.launcher.point_gpus", f"is {gpus!r}", "set split or shared")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(
                "hydra.launcher.point_threads", f"is {threads!r}", "set a whole number >= 1, or null (CPUs / points)"
            )
        return cls(k, gpus, threads)


def packs(items: Sequence[Any], k: int) -> list[list[Any]]:
    """``items`` in consecutive packs of ``k`` (the last one may hold fewer)."""
    return [list(items[i : i + k]) for i in range(0, len(items), max(1, k))]


def gpus_for(visible: Sequence[str], k: int, mode: str = "split") -> list[str | None]:
    """Each of ``k`` point processes' ``CUDA_VISIBLE_DEVICES`` in a job that may use the GPUs ``visible``.

    ``split``: process i sees GPU ``visible[i mod G]``: its own GPU while there are enough (K <= G; with more GPUs
    than points the rest stay idle, which the launcher refuses before submission), shared round robin when there
    are fewer (K = 2G: two processes per GPU). ``shared``: every process sees all of them. None: no GPU to give
    (the variable is left as it is).
    """
    if mode not in GPU_MODES:
        raise ValueError(f"mode must be one of {GPU_MODES}, not {mode!r}")
    gpus = [str(g).strip() for g in visible if str(g).strip()]
    if not gpus:
        return [None] * k
    if mode == "shared":
        return [",".join(gpus)] * k
    return [gpus[i % len(gpus)] for i in range(k)]


def threads_for(cpus: int | None, k: int, threads: int | None = None) -> int | None:
    """Torch/OpenMP threads of each of ``k`` point processes in a job of ``cpus`` CPUs (None: not known, the
    variables are left as they are); ``threads``: ``point_threads`` when set."""
    if threads is not None:
        return threads
    if not cpus:
        return None
    return max(1, cpus // k)


def point_files(job_folder: str | os.PathLike, job_id: str, num: int) -> dict[str, Path]:
    """A packed point's stdout, stderr, spec and result files, in its job's submitit folder."""
    stem = Path(job_folder) / f"{job_id}_point{num}"
    return {
        "stdout": Path(f"{stem}_log.out"),
        "stderr": Path(f"{stem}_log.err"),
        "spec": Path(f"{stem}_spec.json"),
        "result": Path(f"{stem}_result.pkl"),
    }


# ---------------------------------------------------------------------------------------------- the job process
def visible_gpus() -> list[str]:
    """The GPUs this job may use: ``CUDA_VISIBLE_DEVICES``, else every GPU torch sees (none without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch/CUDA: no GPU to share out
        return []


def job_cpus() -> int:
    """The CPUs of this job: SLURM's ``SLURM_CPUS_PER_TASK`` where set, else the CPUs this process may run on."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        return int(cpus)
    return len(os.sched_getaffinity(0))


def _before_exec(held: set[signal.Signals]) -> None:
    """In a point's process before it starts Python: the ``held`` signals (SIGTERM, submitit's) blocked (a blocked
    signal waits; the mask survives ``exec``) until the point's :class:`_Held` handles them, and SIGTERM when the job
    process dies (the point checkpoints and stops)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the job's scheduler ends it with the job
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Forwarder:
    """The job process's handler while its points run: note the signal, send it to every point still running."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], signals: Sequence[signal.Signals]) -> None:
        self.procs = procs
        self.received: list[signal.Signals] = []
        self.previous = {sig: signal.signal(sig, self) for sig in signals}

    def __call__(self, signum: int, frame: Any) -> None:
        sig = signal.Signals(signum)
        if sig not in self.received:
            self.received.append(sig)
        print(f"sesemi: got {sig.name}; forwarding it to the job's points", file=sys.stderr, flush=True)
        if sig == signal.SIGINT:
            return  # Ctrl-C reaches each point's process group by itself
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)


def run_points(payload: str, points: Sequence[Sequence[Any]], packing: Packing) -> list[Any]:
    """The job side of a job of K points: one process per point, each the one-point job side on ``payload`` (the
    submission's pickled launcher) with its ``(overrides, job_dir_key, num, job_id)``; returns their K
    ``JobReturn`` s, in order. Requeues the job once (submitit) when a time limit or preemption stopped any of them.
    """
    import submitit

    from sesemi.cluster import job as job_process
    from sesemi.cluster.job import submitit_signal

    job_process.hand_over()  # a signal that came while the job process started: submitit requeues the job now
    env = submitit.JobEnvironment()
    on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    folder = Path(env.paths.folder)
    files = [point_files(folder, str(env.job_id), int(p[2])) for p in points]
    gpus = gpus_for(visible_gpus(), len(points), packing.gpus)
    threads = threads_for(job_cpus(), len(points), packing.threads)
    signals = [signal.SIGTERM, signal.SIGINT] + ([submitit_signal()] if on_slurm else [])
    procs: list[subprocess.Popen[bytes]] = []
    forwarder = _Forwarder(procs, signals)
    started: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for i, (point, paths) in enumerate(zip(points, files)):
            if paths["result"].is_file():
                continue  # it ended in an earlier start of this job: its result stands
            if any(sig != signal.SIGINT for sig in forwarder.received):
                break  # the job is stopping: the points not started yet start when it is requeued
            started[i] = _start(payload, point, paths, gpus[i], threads)
            procs.append(started[i])
        for proc in procs:
            while proc.poll() is None:
                time.sleep(0.2)
        returns = [_result(point, paths, started.get(i)) for i, (point, paths) in enumerate(zip(points, files))]
        # A point without a result stopped (a signal) or died: a requeued job starts it again.
        stopped = [i for i, paths in enumerate(files) if not paths["result"].is_file()]
        if stopped and on_slurm and submitit_signal() in forwarder.received:
            handler = forwarder.previous.get(submitit_signal())
            if callable(handler):
                _requeue(handler, submitit_signal())
        if stopped and signal.SIGTERM in forwarder.received and on_slurm:
            # SLURM requeues the job (scontrol requeue, preemption): end without a result, as a one-point job does.
            raise SystemExit(-1)
        return returns
    finally:
        for sig, handler in forwarder.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if on_slurm:
            signal.signal(submitit_signal(), signal.SIG_IGN)  # the points ended: no requeue from now on


def _requeue(handler: Any, sig: signal.Signals) -> None:
    """submitit's own handler of its signal: pickles the job again, ``scontrol requeue``, exits (SystemExit)."""
    try:
        handler(int(sig), None)
    except subprocess.CalledProcessError as err:
        # SLURM ends the job step once it accepted the requeue; its SIGTERM may reach `scontrol requeue` first.
        if err.returncode != -signal.SIGTERM:
            raise
        raise SystemExit(-1) from None


def _start(
    payload: str, point: Sequence[Any], paths: Mapping[str, Path], gpus: str | None, threads: int | None
) -> subprocess.Popen[bytes]:
    from sesemi.cluster.job import submitit_signal

    spec = {"payload": payload, "args": list(point), "result": str(paths["result"])}
    with replacing(paths["spec"]) as f:
        f.write(json.dumps(spec))
    env = {**os.environ, POINT_ENV: str(point[2])}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    with open(paths["stdout"], "ab") as out, open(paths["stderr"], "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-u", "-m", "sesemi.cluster.packing", str(paths["spec"])],
            stdout=out,
            stderr=err,
            env=env,
            preexec_fn=functools.partial(_before_exec, {signal.SIGTERM, submitit_signal()}),  # from one thread
        )


def _result(point: Sequence[Any], paths: Mapping[str, Path], proc: subprocess.Popen[bytes] | None) -> Any:
    """The point's ``JobReturn``: the one its process wrote, else a failed one saying why there is none."""
    import cloudpickle

    from sesemi.compat.hydra import JobReturn, JobStatus

    if paths["result"].is_file():
        return cloudpickle.loads(paths["result"].read_bytes())
    from submitit.core.utils import UncompletedJobError

    code = None if proc is None else proc.returncode
    ret = JobReturn(overrides=list(point[0]), status=JobStatus.FAILED)
    ret.return_value = UncompletedJobError(
        f"point {point[2]} of this job ended without a result (exit code {code}); see {paths['stderr']}"
    )
    return ret


# ------------------------------------------------------------------------------------------- a point's process
class _Held:
    """A point's process holds SIGTERM and submitit's signal from its first instant (their default action would end
    it before its run owns them) and hands a held one to the run's handler once the run installed it."""

    def __init__(self, signals: Sequence[signal.Signals]) -> None:
        self.signals = list(signals)
        self.noted: list[signal.Signals] = []
        self.live = True
        for sig in self.signals:
            signal.signal(sig, self)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)  # blocked by the job process until now
        threading.Thread(target=self._hand_over, name="sesemi-held-signals", daemon=True).start()

    def __call__(self, signum: int, frame: Any) -> None:
        if self.live and signal.Signals(signum) not in self.noted:
            self.noted.append(signal.Signals(signum))

    def _hand_over(self) -> None:
        while self.live:
            owners = [signal.getsignal(sig) for sig in self.signals]
            if any(callable(h) and h is not self for h in owners):
                self.live = False
                for sig in self.noted:
                    os.kill(os.getpid(), sig)
                return
            time.sleep(0.1)


def main(argv: Sequence[str]) -> None:
    """``python -m sesemi.cluster.packing SPEC``: one point of a packed job (see :func:`run_points`)."""
    from sesemi.cluster.job import submitit_signal

    _Held([signal.SIGTERM, submitit_signal()])
    spec = json.loads(Path(argv[-1]).read_text())
    import cloudpickle

    # As a one-point job runs (sesemi.cluster.submission.SharedJob): the submission's launcher, its job side.
    launcher, singletons = cloudpickle.loads(Path(spec["payload"]).read_bytes())
    ret = launcher(*spec["args"], singletons)  # a run stopped by a signal exits here: no result
    try:
        data = cloudpickle.dumps(ret)
    except Exception as err:  # noqa: BLE001 - e.g. an exception that does not pickle: keep its text
        from sesemi.compat.hydra import JobReturn, JobStatus

        ret = JobReturn(overrides=list(spec["args"][0]), status=JobStatus.FAILED)
        ret.return_value = RuntimeError(f"the point's result did not pickle ({err}): see its stderr")
        data = cloudpickle.dumps(ret)
    with replacing(spec["result"], "wb") as f:
        f.write(data)


if __name__ == "__main__":
    from sesemi.cluster.packing import main as _main  # the module's own state, not __main__'s

    _main(sys.argv)
