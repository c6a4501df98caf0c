"""Records where a run's processes are: the host of every node in the current attempt of ``status.json``.

``nodes`` lists the hosts in rank order without repeats (``["node1", "node2"]`` for a 2-node job, ``["vm"]`` for a
local run, DDP or not) and ``world_size`` counts the processes; both are gathered over the run's own process group,
so a job whose ranks did not join one group records no such attempt.
"""

from __future__ import annotations

import socket

import pytorch_lightning as pl
import torch.distributed as dist

from sesemi.rundir import RunRecord


class RecordNodes(pl.Callback):
    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        hosts: list = [socket.gethostname()]
        if dist.is_available() and dist.is_initialized():  # the strategy set the process group up before setup
            hosts = [None] * dist.get_world_size()
            dist.all_gather_object(hosts, socket.gethostname())
        if trainer.is_global_zero:
            RunRecord(self.run_dir).note_attempt(nodes=list(dict.fromkeys(hosts)), world_size=len(hosts))
