#!/usr/bin/env bash
# Developer / CI set-up from nothing: a .venv with sesemi (editable) and its test extras, the Fashion-MNIST
# Debian package the real-data tests read, and the local services the test suite runs against (a single-node
# SLURM cluster and PostgreSQL, see scripts/slurm_cluster.sh and scripts/postgres.sh; they need root). The SLURM
# script also installs iproute2, for the 2-node mode a test switches to and back (start --nodes 2).
# Idempotent: run it again after pulling. Then: .venv/bin/python -m pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# This torch/torchvision pair is the one tested; on the project's CI machines it installs from local disk.
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
# hydra-optuna: Hydra's own Optuna sweeper, which tests compare sesemi's search-space grammar and samplers with.
.venv/bin/pip install -q -e '.[test,timm,hydra-optuna]'

if [ "$(id -u)" = 0 ]; then
    if [ ! -d /usr/share/datasets/fashion-mnist ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist ||
            { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; }
    fi
    scripts/slurm_cluster.sh start
    scripts/postgres.sh start
else
    echo "setup_dev: not root: skipping Fashion-MNIST, SLURM and PostgreSQL (their tests will be skipped)" >&2
fi
