#!/usr/bin/env bash
# Compile the CUDA kernels with CUDA 12.4 (as JetPack 6 and many desktops have) on a machine that only has
# a newer toolkit, without installing anything system-wide: nvcc, cicc and cudafe++ come from Debian's
# nvidia-cuda-toolkit (trixie, non-free), the CUDA headers, crt/ and ptxas from NVIDIA's PyPI wheels, and
# <nv/target> from Debian's libcu++-dev; all unpacked under DIR (default /tmp/partool-cuda12).
#
#   bash plugins/check_cuda12.sh [DIR]
#
# Exit 0: every .cu file compiled for sm_80/86/87/89/90. Exit 3: the packages could not be fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/partool-cuda12}
root=$dir/root
mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs" "$dir/wheels" "$root"

if [ ! -x "$root/usr/lib/nvidia-cuda-toolkit/bin/nvcc" ]; then
  echo "deb [trusted=yes] http://deb.debian.org/debian trixie main non-free" >"$dir/sources.list"
  apt_opts=(-oDir::Etc::SourceList="$dir/sources.list" -oDir::Etc::SourceParts=/dev/null
    -oDir::State::Lists="$dir/apt/lists" -oDir::Cache="$dir/apt/cache" -oDebug::NoLocking=1)
  if ! apt-get "${apt_opts[@]}" -qq update || ! (cd "$dir/debs" &&
    apt-get "${apt_opts[@]}" -qq download nvidia-cuda-toolkit libnvvm4 libcu++-dev 2>/dev/null) ||
    ! python3 -m pip download -q --no-deps -d "$dir/wheels" \
      nvidia-cuda-nvcc-cu12==12.4.131 nvidia-cuda-runtime-cu12==12.4.127; then
    echo "check_cuda12: could not fetch CUDA 12.4 from Debian trixie and PyPI" >&2
    exit 3
  fi
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$root"; done
  for wheel in "$dir"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$dir/wheels/x"; done
  chmod +x "$dir"/wheels/x/nvidia/cuda_nvcc/bin/*
  # nvcc reads nvcc.profile beside itself; Debian's points at /usr, this one at the unpacked trees.
  nv=$dir/wheels/x/nvidia
  rm -f "$root/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile"
  cat >"$root/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile" <<EOF
TOP = $root
NVVMIR_LIBRARY_DIR = \$(TOP)/usr/lib/nvidia-cuda-toolkit/libdevice
PATH += $nv/cuda_nvcc/bin:\$(TOP)/usr/lib/nvidia-cuda-toolkit/bin:\$(TOP)/usr/bin:
INCLUDES += "-I$nv/cuda_runtime/include" "-I$nv/cuda_nvcc/include" "-I\$(TOP)/usr/include" \$(_SPACE_)
EOF
fi

nvcc=$root/usr/lib/nvidia-cuda-toolkit/bin/nvcc
"$nvcc" --version | tail -1
gencode=()
for arch in 80 86 87 89 90; do gencode+=(-gencode "arch=compute_$arch,code=sm_$arch"); done
mkdir -p "$dir/obj"
for source in plugins/kernels/src/*.cu; do
  echo "== $source"
  "$nvcc" -std=c++17 -O3 "${gencode[@]}" -Xcompiler -fPIC -Iplugins/kernels/include -Iplugins/kernels/src \
    -c "$source" -o "$dir/obj/$(basename "$source" .cu).o"
done
echo "check_cuda12: every kernel compiled with CUDA 12.4 for sm_80/86/87/89/90"
