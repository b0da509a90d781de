#!/usr/bin/env bash
# The GPU checks in one go: the CUDA tests (device selection, bf16 autocast,
# channels_last, torch.compile, checkpoints and resume on CUDA; NCCL when there
# are 2 GPUs) and the GPU rows of the training and distributed benchmarks.
#
# Run from the repository root on a machine with a CUDA GPU whose python3
# already has torch:
#     bash benchmarks/gpu_check.sh            # logs and tables go to $OUT (default ./gpu-check)
#     bash benchmarks/gpu_check.sh --smoke    # the benchmarks at toy sizes: a check of this script
# The three steps are capped at 240 + 150 + 180 s, inside one 10-minute call of a lent machine.
# With no package index there, first run `make gpu-wheels` on a machine with
# one and bring the .whl/ folder along: it holds the pure-Python dependencies
# (and diffusers, for the benchmarks) built for that machine's Python.
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

# The machine is a throwaway: install into its python3, which is the one with torch.
PY=python3
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps .whl/*.whl || exit 1
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/machine.txt"

status=0
timeout 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests \
    -k "cuda or gpu or nccl or bf16 or compile or auto" 2>&1 | tee "$OUT/tests.log" || status=1
timeout 150 "$PY" benchmarks/distributed.py "$@" 2>&1 | tee "$OUT/distributed.md" || status=1
timeout 180 "$PY" benchmarks/training.py --device cuda --rounds 5 "$@" 2>&1 | tee "$OUT/training.md" || status=1
exit $status
