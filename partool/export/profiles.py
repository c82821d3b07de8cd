"""Export profiles: one TOML file per deployment target (`export/*.toml`), like mmdeploy's deploy configs.

A profile fixes what a target needs — output format, scan lowering, precision, calibration size, the
TensorRT batch profile and workspace, Triton's batching — so `partool export RUN --profile jetson-orin-nano-int8`
is one reproducible command. Options given on the command line win over the profile. Unknown sections or
keys and wrong types are refused with the file and key named, so a typo never silently falls back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partool.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib

FORMATS = ("onnx", "engine", "triton")
PRECISIONS = ("fp32", "fp16", "int8")
SCANS = ("plugin", "portable")

# section -> key -> type; "" is the top level
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {"description": str, "format": str},
    "onnx": {"scan": str, "opset": int},
    "precision": {"mode": str, "calib_count": int, "weight_bits": int},
    "tensorrt": {"min_batch": int, "opt_batch": int, "max_batch": int, "workspace_mib": int},
    "triton": {"preferred_batch_sizes": list, "max_queue_delay_us": int, "instance_count": int},
}


@dataclass(frozen=True)
class Profile:
    """A validated profile; None means "not set here" (the command line or the built-in default decides)."""

    name: str
    path: Path
    values: dict[str, Any] = field(default_factory=dict)  # "section.key" (or "key" at top level) -> value

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def profiles_dir() -> Path:
    """Where the shipped profiles live: `export/` of the checkout this package runs from (an editable
    install), else `<prefix>/share/partool/export` where a wheel puts them."""
    checkout = Path(__file__).resolve().parent.parent.parent / "export"
    installed = Path(sys.prefix) / "share" / "partool" / "export"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


def shipped_profiles() -> list[str]:
    folder = profiles_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def find_profile(name_or_path: str) -> Path:
    """A shipped profile by name (`desktop-fp16`) or a TOML file by path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise UserError(f"--profile {name_or_path}: no such file")
        return candidate
    shipped = profiles_dir() / f"{name_or_path}.toml"
    if not shipped.is_file():
        known = ", ".join(shipped_profiles()) or "none found"
        raise UserError(f"--profile {name_or_path}: no shipped profile of that name (shipped: {known}); "
                        "or pass the path of a .toml file")  # fmt: skip
    return shipped


def _check_type(where: str, key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UserError(f"{where}: '{key}' must be a {expected}, got {value!r}")


def validate(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Flatten and check a parsed profile; returns {"section.key" or "key": value}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in SCHEMA or not key:
                raise UserError(
                    f"{where}: unknown section [{key}]; sections: {', '.join(s for s in SCHEMA if s)}"
                )
            for sub, item in value.items():
                if sub not in SCHEMA[key]:
                    raise UserError(
                        f"{where}: unknown key '{sub}' in [{key}]; keys: {', '.join(SCHEMA[key])}"
                    )
                _check_type(where, f"{key}.{sub}", item, SCHEMA[key][sub])
                flat[f"{key}.{sub}"] = item
        else:
            if key not in SCHEMA[""]:
                raise UserError(f"{where}: unknown top-level key '{key}'; keys: {', '.join(SCHEMA[''])}")
            _check_type(where, key, value, SCHEMA[""][key])
            flat[key] = value
    for key, allowed in (("format", FORMATS), ("onnx.scan", SCANS), ("precision.mode", PRECISIONS)):
        if key in flat and flat[key] not in allowed:
            raise UserError(f"{where}: '{key}' is {flat[key]!r}; choose one of {', '.join(allowed)}")
    for key in ("precision.calib_count", "tensorrt.min_batch", "tensorrt.opt_batch", "tensorrt.max_batch",
                "tensorrt.workspace_mib", "triton.instance_count"):  # fmt: skip
        if key in flat and flat[key] < 1:
            raise UserError(f"{where}: '{key}' must be at least 1, got {flat[key]}")
    if flat.get("precision.weight_bits", 7) not in (7, 8):
        raise UserError(f"{where}: 'precision.weight_bits' is 7 or 8, got {flat['precision.weight_bits']}")
    batches = [flat.get(f"tensorrt.{k}") for k in ("min_batch", "opt_batch", "max_batch")]
    if all(b is not None for b in batches) and not batches[0] <= batches[1] <= batches[2]:
        raise UserError(f"{where}: [tensorrt] needs min_batch <= opt_batch <= max_batch, got {batches}")
    sizes = flat.get("triton.preferred_batch_sizes")
    if sizes is not None and not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise UserError(
            f"{where}: 'triton.preferred_batch_sizes' must be positive whole numbers, got {sizes}"
        )
    return flat


def load_profile(name_or_path: str) -> Profile:
    """Find, parse and validate a profile."""
    path = find_profile(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot read profile {path}: {e}") from None
    return Profile(path.stem, path, validate(data, str(path)))
