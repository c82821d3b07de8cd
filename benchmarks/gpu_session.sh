#!/usr/bin/env bash
# Everything issue 4 asks of a GPU, in one run of at most 580 s (the steps' timeouts; a device call may
# run 600): `partool plugins check`, kernel and model parity and kernel timings (gpu_check.py), Vim-S vs ViT-S eager and
# torch.compile'd with a kernel profile (gpu_model.py), `partool bench` on run folders with and without CUDA graphs,
# Nsight Compute's view of the scan kernels, and an AMP training smoke run (most wanted first).
# Results land in OUT (JSON + logs).
#
#   bash benchmarks/gpu_prepare.sh             # here: sm_90 build of the library + check program into .gpu/
#   bash benchmarks/gpu_session.sh OUT [LIB]   # on the GPU machine; LIB defaults to partool's lookup
#                                              # (carry .gpu; partool_kernels_check must sit beside LIB)
set -o pipefail
out=${1:?usage: gpu_session.sh OUT_DIR [libpartool_kernels.so]}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -n "${2:-}" ] && export PARTOOL_KERNELS_LIB=$2
nvidia-smi -L; nvcc --version | tail -1
t0=$(date +%s)
elapsed() { echo "== $1 rc=$2 at $(( $(date +%s) - t0 )) s"; }

# The kernels against double-precision references, every CUDA scan variant included (the check
# program beside the library: copy build/plugins/lib/partool_kernels_check next to LIB).
timeout 25 python3 -m partool plugins check 2>&1 | tee "$out/kernels_check.log"
elapsed kernels_check $?

timeout 155 python3 benchmarks/gpu_check.py --out "$out/gpu_check.json" 2>&1 | tee "$out/gpu_check.log"
elapsed gpu_check $?

timeout 210 python3 benchmarks/gpu_model.py --out "$out/gpu_model.json" --profile --compile-batches 1 64 2>&1 | tee "$out/gpu_model.log"
elapsed gpu_model $?

# The product path: `partool bench` on Vim-S and ViT-S run folders (random weights, 224x224, 26 attributes),
# fp16, with CUDA graphs (the default on a GPU) and without; predict() wall time, host copies included.
# Then the runtime's own CUDA-graph test.
cat > "$out/make_runs.py" <<'PY'
import sys
from partool.artifacts import build_meta
from partool.models import create_model
from partool.models.run_folder import save_run
for name in ("vim-s", "vit-s"):
    model = create_model(name, 26, img_size=(224, 224))
    save_run(f"{sys.argv[1]}/{name}", model, build_meta(model, [f"a{i}" for i in range(26)], "synth"))
PY
runs=/tmp/partool-bench-runs
timeout 70 bash -c "python3 '$out/make_runs.py' $runs &&
  python3 -m partool bench $runs/vim-s $runs/vit-s --device cuda --batch 1,8,64 --runs 20 --out '$out/bench_graphs.json' &&
  python3 -m partool bench $runs/vim-s $runs/vit-s --device cuda --batch 1,8,64 --runs 20 --no-cuda-graphs --out '$out/bench_eager.json' &&
  python3 -m pytest -q -p no:cacheprovider tests/test_runtime.py -k cuda_graphs" 2>&1 | tee "$out/bench.log"
elapsed bench $?

# Where the scan kernels' time goes: throughput, occupancy and warp stalls of the default scan kernel and
# the row kernel at Vim-S shapes (fp16, b = 64 and 1).
cat > "$out/ncu_scan.py" <<'PY'
import sys
sys.path.insert(0, "benchmarks")
import gpu_check as g
import partool.ops.kernel_abi as abi
import partool.ops.kernels as k
for variant in ("auto", "rows"):
    with abi.use_scan_variant(variant):
        for b in (64, 1):
            a = g.inputs(b, 768, 16, 197, 1, g.torch.float16, True)
            k.scan(*a, delta_softplus=True)
PY
timeout 70 ncu --kernel-name regex:scan --launch-count 6 --section SpeedOfLight --section Occupancy \
  --section WarpStateStats python3 "$out/ncu_scan.py" 2>&1 | tee "$out/ncu.log" | grep -E "scan_|Throughput|Occupancy|Duration|Registers" | head -80
elapsed ncu $?

timeout 50 python3 -m partool train --model vim-t --model-arg depth=4 --data synth:512 --epochs 2 --batch-size 64 \
  --img-size 128x64 --device cuda --amp --out /tmp/partool-amp-run --workers 4 2>&1 | tail -20 | tee "$out/amp_train.log"
elapsed amp_train $?
