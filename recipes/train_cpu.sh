#!/usr/bin/env bash
# The README's main command, for a fresh machine: makes .venv, installs the package (CPU torch first),
# then trains Search-R1 with verl's own main_ppo on the embedded sample (search-r1 demo).
#   bash recipes/train_cpu.sh               # GRPO, 4 steps
#   bash recipes/train_cpu.sh --algo ppo    # PPO: critic + GAE, KL in the reward
set -euo pipefail
cd "$(dirname "$0")/.."
case "$PWD" in
    *[[:space:]]*)
        # Ray starts its workers through a shell with the venv's python path unquoted (ray-project/ray#5288)
        echo "error: this checkout's path has a space ($PWD); Ray cannot start its workers from a venv there." >&2
        echo "       Clone it under a path without spaces and run this again." >&2
        exit 2 ;;
esac
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    $PY -m venv .venv
fi
. .venv/bin/activate
echo "[setup] installing (CPU torch, then search-r1-plugin[demo] with verl)"
python -m pip install -q --upgrade pip
# CPU torch first, or verl's dependencies pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -c <(echo torch==2.13.0) -e ".[demo]"
exec search-r1 demo "$@"
