#!/usr/bin/env bash
# Everything issue 4 asks of a GPU, in one run of at most 580 s (the steps' timeouts; a device call may
# run 600): kernel and model parity and kernel timings (gpu_check.py), Vim-S vs ViT-S eager and
# torch.compile'd with a kernel profile (gpu_model.py),
# Nsight Compute's view of the scan kernels, and an AMP training smoke run (most wanted first).
# Results land in OUT (JSON + logs).
#
#   partool plugins build                      # here, or: cmake ... -DCMAKE_CUDA_ARCHITECTURES=90
#   bash benchmarks/gpu_session.sh OUT [LIB]   # on the GPU machine; LIB defaults to partool's lookup
set -o pipefail
out=${1:?usage: gpu_session.sh OUT_DIR [libpartool_kernels.so]}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -n "${2:-}" ] && export PARTOOL_KERNELS_LIB=$2
nvidia-smi -L; nvcc --version | tail -1
t0=$(date +%s)
elapsed() { echo "== $1 rc=$2 at $(( $(date +%s) - t0 )) s"; }

timeout 170 python3 benchmarks/gpu_check.py --out "$out/gpu_check.json" 2>&1 | tee "$out/gpu_check.log"
elapsed gpu_check $?

timeout 230 python3 benchmarks/gpu_model.py --out "$out/gpu_model.json" --profile --compile-batches 1 64 2>&1 | tee "$out/gpu_model.log"
elapsed gpu_model $?

# Where the scan kernels' time goes: throughput, occupancy and warp stalls of one launch of each
# configuration at Vim-S shapes (fp16, b = 64 and 1).
cat > "$out/ncu_scan.py" <<'PY'
import os, sys
sys.path.insert(0, "benchmarks")
import gpu_check as g
import partool.ops.kernels as k
for env in ({}, {"PARTOOL_SCAN_CUDA_KERNEL": "rows"}):
    os.environ.pop("PARTOOL_SCAN_CUDA_KERNEL", None)
    os.environ.update(env)
    for b in (64, 1):
        a = g.inputs(b, 768, 16, 197, 1, g.torch.float16, True)
        k.scan_cuda(*a, delta_softplus=True)
PY
timeout 100 ncu --kernel-name regex:scan --launch-count 6 --section SpeedOfLight --section Occupancy \
  --section WarpStateStats python3 "$out/ncu_scan.py" 2>&1 | tee "$out/ncu.log" | grep -E "scan_|Throughput|Occupancy|Duration|Registers" | head -80
elapsed ncu $?

timeout 80 python3 -m partool train --model vim-t --model-arg depth=4 --data synth:512 --epochs 2 --batch-size 64 \
  --img-size 128x64 --device cuda --amp --out /tmp/partool-amp-run --workers 4 2>&1 | tail -20 | tee "$out/amp_train.log"
elapsed amp_train $?
