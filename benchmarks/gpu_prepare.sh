#!/usr/bin/env bash
# Before a GPU session: build the kernels for one architecture (default sm_90, H100/H200) here, where nvcc
# is, and put the library and its check program in .gpu/ (git-ignored), the folder to carry to the device.
#
#   bash benchmarks/gpu_prepare.sh [ARCH]      # then, on the device:
#   bash benchmarks/gpu_session.sh "$OUT" .gpu/libpartool_kernels.so
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-90}
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S plugins -B "build/gpu-sm$arch" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DPARTOOL_BUILD_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" -DPARTOOL_BUILD_TRT_PLUGIN=OFF -DPARTOOL_BUILD_ORT_OPS=OFF >/dev/null
cmake --build "build/gpu-sm$arch" -j2
mkdir -p .gpu
cp "build/gpu-sm$arch/lib/libpartool_kernels.so" "build/gpu-sm$arch/lib/partool_kernels_check" .gpu/
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
if ! python3 -c "import ctypes, sys; sys.exit(ctypes.CDLL('.gpu/libpartool_kernels.so').partool_kernels_has_cuda() != 1)"; then
  echo "gpu_prepare: .gpu/libpartool_kernels.so has no CUDA kernels (was nvcc found?)" >&2
  exit 1
fi
ls -l .gpu/
echo "carry .gpu; run: bash benchmarks/gpu_session.sh \"\$OUT\" .gpu/libpartool_kernels.so"
