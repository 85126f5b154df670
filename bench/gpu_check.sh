#!/usr/bin/env bash
# The GPU checks in one go (< 8 minutes on one GPU): the gpu test tier, then bench/gpu_check.py
# (caching vs bare forward in bf16, MELBO vs the one-vector loop, Ray caching with one worker per GPU).
# Run from the repository root:   bench/gpu_check.sh        (PYTHON=/path/to/python to pick the interpreter)
# Needs a torch build with CUDA and riskscope's dependencies (make setup); the default model is converted on
# first use (~30 s). Prints every figure; nothing is written outside bench/out/ and temporary folders.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
echo "== machine: $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), python $PY"
timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
"$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
torch.cuda.is_available(), 'devices', torch.cuda.device_count()); sys.exit(0 if torch.cuda.is_available() else 3)" \
  || { echo "== no CUDA device visible to torch: nothing to check (the gpu tier skips itself here)"; exit 3; }
"$PY" -c "import riskscope, ray, accelerate; print('riskscope', riskscope.__file__)" || echo "== a dependency is missing (see above); parts that need it will fail"
echo "== gpu test tier"
timeout 200 "$PY" -m pytest tests/test_gpu.py tests/test_device_map.py -m "gpu or not slow" -q -p no:cacheprovider -rs
echo "== pytest exit status: $?"
echo "== benchmarks"
timeout 260 "$PY" bench/gpu_check.py "$@"
echo "== gpu_check.py exit status: $?"
