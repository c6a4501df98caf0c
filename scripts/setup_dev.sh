#!/usr/bin/env bash
# Developer / CI set-up from nothing: a .venv with sesemi (editable) and its test extras on the Hydra 1.4 line, a
# .venv-hydra13 with the same on hydra-core 1.3.2 (for the subset of tests/hydra13_subset.txt), the Fashion-MNIST
# Debian package the real-data tests read, and the local services the test suite runs against (a single-node
# SLURM cluster and PostgreSQL, see scripts/slurm_cluster.sh and scripts/postgres.sh; they need root). The SLURM
# script also installs iproute2, for the 2-node mode a test switches to and back (start --nodes 2).
# Idempotent: run it again after pulling. Then: .venv/bin/python -m pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# This torch/torchvision pair is the one tested; on the project's CI machines it installs from local disk.
TORCH=(torch==2.14.1 torchvision==0.29.1)

# The Hydra 1.4 line (release candidates: pip takes them only when asked by name), with Hydra's own Optuna sweeper,
# which the tests compare sesemi's grammar and sampler configs with.
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "${TORCH[@]}"
.venv/bin/pip install -q -e '.[test,timm,hydra-optuna]' 'hydra-core>=1.4.0rc3,<1.5' 'hydra-submitit-launcher>=1.4.0rc3,<1.5'

# The Hydra 1.3 line as lightning-hydra-template pins it. editable_mode=compat: Hydra 1.3 finds plugins only by
# listing the hydra_plugins package, which setuptools' default editable install (an import hook) hides.
[ -x .venv-hydra13/bin/python ] || "$PYTHON" -m venv .venv-hydra13
.venv-hydra13/bin/pip install -q --upgrade pip
.venv-hydra13/bin/pip install -q "${TORCH[@]}"
.venv-hydra13/bin/pip install -q -e '.[test]' 'hydra-core==1.3.2' 'hydra-submitit-launcher==1.2.0' \
    --config-settings editable_mode=compat

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
