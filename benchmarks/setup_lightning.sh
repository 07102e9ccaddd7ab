#!/usr/bin/env bash
# Builds the environment that benchmarks/sim_speed.py uses to run IBM's aihwkit-lightning 2.1
# side by side with xbarc (the matched-settings comparison). It is NOT a dependency of xbarc:
# a separate venv with the CPU build of torch, aihwkit-lightning, numpy and onnx (to read the
# trained model's weights). benchmarks/lightning_side.py runs in it and never imports xbarc.
#
#   bash benchmarks/setup_lightning.sh            # makes benchmarks/.venv-lightning
#   bash benchmarks/setup_lightning.sh DIR        # makes the venv in DIR
#
# Other arguments go to pip (e.g. --find-links DIR_WITH_WHEELS).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-lightning"
if [[ $# -gt 0 && "$1" != -* ]]; then venv="$1"; shift; fi
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check "$@")
# torch first, the CPU build pinned to the version aihwkit-lightning 2.1.0 requires (torch==2.13.0);
# on this project's machines the registry's torch 2.13.0 is the CPU build (no GPU here).
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "aihwkit-lightning==2.1.0" numpy onnx
"$venv/bin/python" -c "import torch, aihwkit_lightning, onnx; print('torch', torch.__version__, '| aihwkit-lightning ready in', '$venv')"
