"""One DDP rank of a local multirun job: ``python -m sesemi.cluster.ranks CONFIG.yaml [--result R] [--log-file L]``.

Started by :func:`sesemi.launch.train_in_rank_processes` with ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` set; runs :func:`sesemi.train.train` on the job's resolved config (the same for every rank) and
writes its outcome (ok, or the error with its config key) to ``--result`` for the job process.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sesemi.cluster.ranks")
    parser.add_argument("config")
    parser.add_argument("--result", default=None)
    parser.add_argument("--log-file", default=None)
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from sesemi.errors import ConfigError
    from sesemi.train import train

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s", handlers=handlers
    )
    cfg = OmegaConf.load(args.config)
    outcome: dict = {"error": None}
    try:
        train(cfg)
        return 0
    except ConfigError as err:
        outcome = {"error": str(err), "type": "ConfigError", "key": err.key, "problem": err.problem, "fix": err.fix}
        raise
    except BaseException as err:
        outcome = {"error": f"{type(err).__name__}: {err}", "type": type(err).__name__}
        raise
    finally:
        if args.result:
            Path(args.result).write_text(json.dumps(outcome))


if __name__ == "__main__":
    sys.exit(main())
