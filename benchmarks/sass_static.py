"""Static view of the CUDA kernels without a GPU: registers and spills (ptxas) and, per loop of the
SASS, how many instructions, global loads, special-function (MUFU) ops and shuffles one trip runs.

Loop trip counts are not in the SASS, so read the rows as "per trip": e.g. the row kernel's recurrence
loop does 4 steps a trip (unrolled), its staging loop 4 elements. Needs nvcc and cuobjdump (CUDA
toolkit, or `pip download nvidia-cuda-cuobjdump` and unpack the wheel's bin/).

    python benchmarks/sass_static.py [--arch sm_90] [--kernel scan_rows_kernel<__half, 16>] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCES = ("scan_cuda.cu", "scan_rows_cuda.cu", "conv1d_cuda.cu", "norm_cuda.cu")
SRC = Path(__file__).resolve().parents[1] / "plugins" / "kernels"
OPS = ("LDG", "STG", "LDS", "STS", "MUFU", "SHFL", "BAR")


def demangle(names: list[str]) -> list[str]:
    out = subprocess.run(
        ["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True
    ).stdout
    return [re.sub(r"partool::\(anonymous namespace\)::", "", n).split("(")[0] for n in out.splitlines()]


def loops(sass: str) -> list[dict]:
    """Backward branches: the instructions between a branch and its (earlier) target."""
    ins = [(int(m[1], 16), m[2]) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    where = {addr: i for i, (addr, _) in enumerate(ins)}
    found = []
    for i, (addr, text) in enumerate(ins):
        m = re.search(r"BRA (?:!?P\d, )?0x([0-9a-f]+)", text)
        target = int(m[1], 16) if m else None
        if target is None or target >= addr or target not in where:
            continue
        body = [re.sub(r"^@!?P\w+ ", "", t).split()[0].split(".")[0] for _, t in ins[where[target] : i + 1]]
        counts = collections.Counter(body)
        found.append(
            {"at": hex(target), "instructions": len(body), **{op: counts[op] for op in OPS if counts[op]}}
        )
    return found


def analyse(arch: str, nvcc: str, cuobjdump: str) -> dict[str, dict]:
    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in SOURCES:
            cubin = Path(tmp) / (source + ".cubin")
            build = subprocess.run(
                [nvcc, "-std=c++17", "-O3", f"-arch={arch}", f"-I{SRC / 'include'}", "-Xptxas", "-v", "-cubin",
                 str(SRC / "src" / source), "-o", str(cubin)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            usage = {}
            for m in re.finditer(r"Compiling entry function '(\w+)'.*?spill stores, (\d+) bytes spill loads\n.*?"
                                 r"Used (\d+) registers", build.stderr, re.S):  # fmt: skip
                usage[m[1]] = {"registers": int(m[3]), "spill_bytes": int(m[2])}
            sass = subprocess.run(
                [cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True
            ).stdout
            parts = re.split(r"\s+Function : (\w+)\n", sass)[1:]
            names = demangle(parts[0::2])
            for mangled, name, body in zip(parts[0::2], names, parts[1::2], strict=True):
                result[name] = {**usage.get(mangled, {}), "loops": loops(body)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--kernel", help="only kernels whose name contains this")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args()
    tools = {t: shutil.which(t) for t in ("nvcc", "cuobjdump")}
    missing = [t for t, path in tools.items() if path is None]
    if missing:
        raise SystemExit(f"sass_static: {', '.join(missing)} not on PATH (see the module docstring)")
    result = analyse(args.arch, tools["nvcc"], tools["cuobjdump"])
    if args.kernel:
        result = {k: v for k, v in result.items() if args.kernel in k}
    for name, info in result.items():
        print(f"{name}: {info.get('registers')} registers, {info.get('spill_bytes')} bytes spilled")
        for loop in info["loops"]:
            ops = ", ".join(f"{op} {loop[op]}" for op in OPS if op in loop)
            print(f"    loop at {loop['at']:>7}: {loop['instructions']:5d} instructions  ({ops})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"arch": args.arch, "kernels": result}, indent=1))


if __name__ == "__main__":
    main()
