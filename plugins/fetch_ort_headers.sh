#!/usr/bin/env bash
# Fetch ONNX Runtime's C API headers (onnxruntime_c_api.h …) from Debian's libonnxruntime-dev package, for the
# custom-op library (plugins/ort). The pip wheel ships no headers; Debian's package (trixie, main) does.
# Nothing is installed system-wide: the .deb is downloaded with a private apt state and unpacked under
#
#   ${XDG_CACHE_HOME:-~/.cache}/partool/onnxruntime/<version>/include
#
# which is where `partool plugins build`, plugins/CMakeLists.txt and the tests look when ONNXRUNTIME_ROOT is
# not set. The C API is ABI-stable: headers of 1.17 or newer build a library that every newer runtime loads.
# On Debian trixie or Ubuntu 24.04+, `apt-get install libonnxruntime-dev` does the same system-wide.
#
#   bash plugins/fetch_ort_headers.sh [SUITE]     (default SUITE: trixie)
#
# Prints the include folder. Exit 0: headers present. Exit 3: apt-get is missing or Debian is unreachable.
set -euo pipefail
suite=${1:-trixie}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/partool/onnxruntime
found=$(ls -d "$cache"/*/include/onnxruntime_c_api.h 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$found" ]; then
  dirname "$found"
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "fetch_ort_headers: needs apt-get and dpkg-deb (Debian/Ubuntu); elsewhere set ONNXRUNTIME_ROOT to an" \
    "ONNX Runtime release folder" >&2
  exit 3
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
echo "deb [trusted=yes] http://deb.debian.org/debian $suite main" >"$work/sources.list"
apt_opts=(-oDir::Etc::SourceList="$work/sources.list" -oDir::Etc::SourceParts=/dev/null
  -oDir::State::Lists="$work/lists" -oDir::Cache="$work/cache" -oDebug::NoLocking=1
  -oAPT::Sandbox::User=root)
if ! timeout 300 apt-get "${apt_opts[@]}" -qq update ||
  ! (cd "$work/deb" && timeout 300 apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev); then
  echo "fetch_ort_headers: could not download libonnxruntime-dev from Debian $suite" >&2
  exit 3
fi
deb=$(ls "$work"/deb/libonnxruntime-dev_*.deb)
version=$(dpkg-deb -f "$deb" Version)
version=${version%%+*}
dpkg-deb -x "$deb" "$work/unpacked"
if [ ! -f "$work/unpacked/usr/include/onnxruntime/onnxruntime_c_api.h" ]; then
  echo "fetch_ort_headers: $(basename "$deb") holds no usr/include/onnxruntime/onnxruntime_c_api.h" >&2
  exit 1
fi
mkdir -p "$cache/$version"
rm -rf "$cache/$version/include.tmp" "$cache/$version/include"
cp -r "$work/unpacked/usr/include/onnxruntime" "$cache/$version/include.tmp"
mv -T "$cache/$version/include.tmp" "$cache/$version/include"
echo "$cache/$version/include"
