#!/usr/bin/env bash
# Microsoft USB (`semilearn` 0.3.2) for benchmarks/usb_side_by_side.py only, in a venv of its own (default .venv-usb
# in the repository root; never the project's venv):
#
#   bash benchmarks/setup_usb.sh [VENV]
#
# The venv sees the project venv's packages (torch, torchvision, scikit-learn, ... : the same builds sesemi runs
# on) through one .pth line, and gets on top of them, with --no-deps so that pip never touches torch: semilearn
# itself and the two small packages its CV training path imports that the project venv lacks (progress, ruamel.yaml).
# semilearn's package also imports torchaudio, transformers, wandb, aim and scikit-image at import time for its
# audio, NLP, logging and medical-image paths; those are not installed: the benchmark stands in empty modules for
# them (`usb_side_by_side.py`, `usb_imports`), and any use of one fails by name.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv-usb}
base_python=${SESEMI_PYTHON:-$root/.venv/bin/python}
base_site=$("$base_python" -c 'import site; print(site.getsitepackages()[0])')
"$base_python" -m venv "$venv"
site_dir=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
echo "import site; site.addsitedir('$base_site')" > "$site_dir/_sesemi_project_venv.pth"
"$venv/bin/python" -m pip install --no-deps semilearn==0.3.2 progress==1.6.1 ruamel.yaml==0.18.6
echo "USB venv ready: $venv (torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'))"
