"""Building and finding the native plugins: `libpartool_kernels`, the TensorRT plugin library and the
ONNX Runtime custom-op library.

One CMake project (`plugins/CMakeLists.txt`) builds them all; this module runs it and looks for its
outputs, so that `partool plugins build`, the ctypes binding (`partool.ops.kernels`) and the ONNX Runtime
sessions (`partool.runtime.ort_session`) agree on where the libraries are. Search order:
`PARTOOL_KERNELS_LIB` / `PARTOOL_TRT_PLUGIN_LIB` / `PARTOOL_ORT_OPS_LIB`, then `<repo>/build/plugins/lib`,
then `<cache>/plugins/lib`. The build also makes `partool_kernels_check`, the kernels' own test
program, which `run_kernels_check` runs.

`<cache>` is `$XDG_CACHE_HOME/partool`, by default `~/.cache/partool`. It is also where the external
headers are looked for when no variable names them (the same rule as plugins/CMakeLists.txt):
TensorRT's in `TENSORRT_INCLUDE_DIR`, else `<cache>/tensorrt/<version>/include`; ONNX Runtime's in
`ONNXRUNTIME_ROOT/include`, else `<cache>/onnxruntime/<version>/include` (what
`plugins/fetch_ort_headers.sh` writes, from Debian's libonnxruntime-dev), else `/usr/include/onnxruntime`.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from partool.errors import UserError

DEFAULT_CUDA_ARCHS = "80;86;87;89;90"
# The selective scan's ONNX node and TensorRT plugin (docs/architecture.md, "ONNX node"): the exporter writes
# it, TensorRT's ONNX parser maps it to the plugin by these names, ONNX Runtime's custom-op library runs it.
PLUGIN_DOMAIN = "partool"
PLUGIN_OP = "SelectiveScan"
PLUGIN_VERSION = "1"
KERNELS_LIB = "libpartool_kernels.so" if sys.platform != "darwin" else "libpartool_kernels.dylib"
KERNELS_CHECK = "partool_kernels_check"
TRT_PLUGIN_LIB = "libpartool_trt_plugins.so"
ORT_OPS_LIB = "libpartool_ort_ops.so" if sys.platform != "darwin" else "libpartool_ort_ops.dylib"


def source_dir() -> Path:
    """`plugins/` of the checkout this package runs from (the CMake project)."""
    return Path(__file__).resolve().parent.parent / "plugins"


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/partool` (default `~/.cache/partool`): per-user builds and fetched headers."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "partool"


def default_build_dir() -> Path:
    """`<repo>/build/plugins` when the checkout is writable, else `<cache>/plugins`."""
    repo = source_dir().parent
    if os.access(repo, os.W_OK):
        return repo / "build" / "plugins"
    return cache_dir() / "plugins"


def _candidate_dirs() -> list[Path]:
    return [source_dir().parent / "build" / "plugins", cache_dir() / "plugins"]


def _version_key(path: Path) -> list[int]:
    """`<cache>/<lib>/<version>/include` sorts by its version folder, numerically (10.16 > 10.9)."""
    return [int(part) for part in re.findall(r"\d+", path.parent.name)]


def _cached_include_dirs(library: str, header: str) -> list[Path]:
    found = [d for d in (cache_dir() / library).glob("*/include") if (d / header).is_file()]
    return sorted(found, key=_version_key, reverse=True)


def tensorrt_include_dirs() -> list[Path]:
    """TensorRT include/ folders (holding NvInferRuntime.h), newest first: `TENSORRT_INCLUDE_DIR` alone when
    it is set, else every `<cache>/tensorrt/<version>/include`."""
    explicit = os.environ.get("TENSORRT_INCLUDE_DIR")
    if explicit:
        path = Path(explicit).expanduser()
        return [path] if (path / "NvInferRuntime.h").is_file() else []
    return _cached_include_dirs("tensorrt", "NvInferRuntime.h")


def onnxruntime_include_dir() -> Path | None:
    """The folder holding onnxruntime_c_api.h: `ONNXRUNTIME_ROOT/include` alone when the variable is set,
    else the newest `<cache>/onnxruntime/<version>/include`, else Debian's `/usr/include/onnxruntime`."""
    root = os.environ.get("ONNXRUNTIME_ROOT")
    if root:
        candidates = [Path(root).expanduser() / "include"]
    else:
        candidates = [
            *_cached_include_dirs("onnxruntime", "onnxruntime_c_api.h"),
            Path("/usr/include/onnxruntime"),
        ]
    return next((d for d in candidates if (d / "onnxruntime_c_api.h").is_file()), None)


def _find(env_var: str, name: str) -> Path | None:
    explicit = os.environ.get(env_var)
    if explicit:
        path = Path(explicit).expanduser()
        return path if path.is_file() else None
    for build in _candidate_dirs():
        path = build / "lib" / name
        if path.is_file():
            return path
    return None


def find_kernels_library() -> Path | None:
    """Path of `libpartool_kernels`, or None when it is not built (PARTOOL_KERNELS_LIB overrides)."""
    return _find("PARTOOL_KERNELS_LIB", KERNELS_LIB)


def find_trt_plugin_library() -> Path | None:
    """Path of the TensorRT plugin library, or None (PARTOOL_TRT_PLUGIN_LIB overrides)."""
    return _find("PARTOOL_TRT_PLUGIN_LIB", TRT_PLUGIN_LIB)


def find_ort_custom_op_library() -> Path | None:
    """Path of the ONNX Runtime custom-op library (partool::SelectiveScan on ORT's CPU provider), or None
    when it is not built (PARTOOL_ORT_OPS_LIB overrides)."""
    return _find("PARTOOL_ORT_OPS_LIB", ORT_OPS_LIB)


@dataclass(frozen=True)
class BuildResult:
    build_dir: Path
    kernels: Path
    trt_plugin: Path | None
    cuda: bool  # the kernels library holds CUDA kernels
    seconds: float
    ort_ops: Path | None = None  # built when onnxruntime_c_api.h was found


def _require_tools() -> tuple[str, str | None]:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError(
            "cmake not found on PATH; install it (`pip install cmake` or `apt-get install cmake`) "
            "and rerun `partool plugins build`"
        )
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if c):
        raise UserError(
            "no C++ compiler found (c++/g++/clang++); install one (`apt-get install g++`) and rerun "
            "`partool plugins build`"
        )
    return cmake, shutil.which("ninja")


def build_plugins(
    build_dir: Path | None = None,
    cuda_archs: str | None = DEFAULT_CUDA_ARCHS,
    tensorrt_include: Path | None = None,
    jobs: int = 2,
    quiet: bool = False,
    ort_include: Path | None = None,
) -> BuildResult:
    """Configure and build `plugins/` with CMake; returns where the libraries are.

    `cuda_archs=None` builds the CPU kernels only, even where nvcc exists. `ort_include` is ONNX Runtime's
    include/ (onnxruntime_c_api.h) for the custom-op library, `tensorrt_include` TensorRT's for the plugin;
    without them CMake looks where `onnxruntime_include_dir` and `tensorrt_include_dirs` do. Progress goes
    to stderr through rich unless `quiet`; a failing step raises UserError with the tail of its log.
    """
    cmake, ninja = _require_tools()
    src = source_dir()
    if not (src / "CMakeLists.txt").is_file():
        raise UserError(f"no CMake project at {src}; run from a partool source checkout")
    build = Path(build_dir).expanduser().resolve() if build_dir else default_build_dir()
    build.mkdir(parents=True, exist_ok=True)
    configure = [cmake, "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"]
    if ninja and not (build / "CMakeCache.txt").is_file():
        configure += ["-G", "Ninja"]
    if cuda_archs:
        configure += ["-DPARTOOL_BUILD_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={cuda_archs}"]
    else:
        configure += ["-DPARTOOL_BUILD_CUDA=OFF"]
    if tensorrt_include is not None:
        include = Path(tensorrt_include).expanduser().resolve()
        if not (include / "NvInfer.h").is_file():
            raise UserError(
                f"--tensorrt-include {include}: no NvInfer.h there; point it at TensorRT's include/"
            )
        configure += [f"-DTENSORRT_INCLUDE_DIR={include}"]
    if ort_include is not None:
        include = Path(ort_include).expanduser().resolve()
        if not (include / "onnxruntime_c_api.h").is_file():
            raise UserError(
                f"--ort-include {include}: no onnxruntime_c_api.h there; point it at ONNX Runtime's include/ "
                "(a release archive's include/, or include/onnxruntime/core/session of the source tree)"
            )
        configure += [f"-DONNXRUNTIME_INCLUDE_DIR={include}"]
    steps = [("configure", configure), ("build", [cmake, "--build", str(build), "-j", str(max(1, jobs))])]
    start = time.perf_counter()
    log = build / "partool-build.log"
    with log.open("w") as sink:
        for title, cmd in steps:
            _run_step(title, cmd, sink, log, quiet)
    kernels = build / "lib" / KERNELS_LIB
    if not kernels.is_file():
        raise UserError(f"the build finished but {kernels} is missing; see {log}")
    trt, ort_ops = build / "lib" / TRT_PLUGIN_LIB, build / "lib" / ORT_OPS_LIB
    return BuildResult(
        build_dir=build,
        kernels=kernels,
        trt_plugin=trt if trt.is_file() else None,
        cuda=_has_cuda(kernels),
        seconds=time.perf_counter() - start,
        ort_ops=ort_ops if ort_ops.is_file() else None,
    )


def _has_cuda(lib: Path) -> bool:
    import ctypes

    return bool(ctypes.CDLL(str(lib)).partool_kernels_has_cuda())


def _run_step(title: str, cmd: list[str], sink, log: Path, quiet: bool) -> None:
    sink.write(f"$ {' '.join(cmd)}\n")
    sink.flush()
    if quiet:
        proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, check=False)
    else:
        from rich.console import Console

        console = Console(stderr=True)
        with console.status(f"[bold]plugins: {title}[/] ({log})"):
            proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, check=False)
        console.print(f"plugins: {title} {'done' if proc.returncode == 0 else 'FAILED'}")
    if proc.returncode != 0:
        sink.flush()
        lines = log.read_text(errors="replace").strip().splitlines() or [""]
        errors = [line for line in lines if "error" in line.lower()]
        detail = (errors or lines)[-1].strip()
        raise UserError(f"plugins {title} failed (exit {proc.returncode}): {detail} (full log: {log})")


_KNOBS = ("PARTOOL_CPU_ISA",)


@dataclass(frozen=True)
class CheckRun:
    label: str  # which kernels ran: "CPU (widest) + CUDA, 9 scan variants", "CPU avx2", "CPU base"
    returncode: int
    output: str


def find_kernels_check() -> Path | None:
    """`partool_kernels_check` beside the kernels library, or None when that build did not make it."""
    lib = find_kernels_library()
    program = lib.parent / KERNELS_CHECK if lib is not None else None
    return program if program is not None and program.is_file() else None


def run_kernels_check(
    cpu_only: bool = False,
    verbose: bool = False,
    program: Path | None = None,
    cuda_variants: Sequence[str] | None = None,
) -> list[CheckRun]:
    """Run the kernels' check program once per CPU code path this machine can take; the first run also checks
    the CUDA kernels (every scan variant) where the library has them and a GPU is usable.

    On x86-64 the library picks AVX-512, AVX2 or its base kernels at run time; PARTOOL_CPU_ISA caps the
    choice, so the narrower paths, which this CPU would never pick, are checked too. Elsewhere (a Jetson's
    aarch64) there is one CPU path. `program` defaults to the one beside the kernels library. `cuda_variants`
    narrows the CUDA part to those scan variants ("auto" and explicit names); by default all of them run.
    """
    program = program or find_kernels_check()
    if program is None:
        raise UserError(f"{KERNELS_CHECK} is not built; run `partool plugins build`")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    variants = ["--variants", ",".join(cuda_variants)] if cuda_variants else []
    runs = [_check(program, "CPU (widest)", {}, cpu_only, verbose, variants)]
    for cap in ("avx2", "base") if x86 else ():
        runs.append(_check(program, f"CPU {cap}", {"PARTOOL_CPU_ISA": cap}, True, verbose))
    cuda = re.search(r"^cuda: (?:checked|emulated on the CPU) \((\d+) scan variants\)", runs[0].output, re.M)
    if cuda:
        runs[0] = CheckRun(
            f"CPU (widest) + CUDA, {cuda[1]} scan variants", runs[0].returncode, runs[0].output
        )
    return runs


def _check(
    program: Path, label: str, knobs: dict[str, str], cpu_only: bool, verbose: bool, extra: Sequence[str] = ()
) -> CheckRun:
    env = {k: v for k, v in os.environ.items() if k not in _KNOBS} | knobs
    args = (
        [str(program)] + (["--verbose"] if verbose else []) + (["--cpu-only"] if cpu_only else []) + [*extra]
    )
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    return CheckRun(label, proc.returncode, proc.stdout + proc.stderr)
