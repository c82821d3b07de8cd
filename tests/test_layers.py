"""The import direction of docs/architecture.md, "Layers": a module imports only its own stage, the
foundation and the stages to its left, lazily inside functions too; models compose ops, never the kernel
binding."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "partool"
STAGES = ("ops", "models", "data", "metrics", "train", "runtime", "export", "video", "cli")
FOUNDATION = {"partool", "partool.errors", "partool.plugins", "partool.artifacts", "partool.devices"}
TOP_LEVEL_STAGE = {  # modules directly in partool/ that belong to a stage
    "partool.metrics": "metrics",
    "partool.evaluate": "metrics",
    "partool.bench": "runtime",
    "partool.demo": "cli",
    "partool.__main__": "cli",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage(module: str) -> str | None:
    """The stage of a partool module, None for the foundation."""
    if module in FOUNDATION:
        return None
    if module in TOP_LEVEL_STAGE:
        return TOP_LEVEL_STAGE[module]
    name = module.split(".")[1]
    if name not in STAGES:
        raise AssertionError(f"{module} is in no stage: add it to docs/architecture.md and this test")
    return name


def imported_modules(path: Path) -> set[str]:
    """Every partool module `path` imports, at any depth of the file (`from pkg import mod` names mod)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
    return {m for m in found if m == "partool" or m.startswith("partool.")}


def test_every_module_has_a_place():
    assert len(MODULES) > 80
    for module in MODULES:
        stage(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_right_to_left(module):
    own = stage(module)
    allowed = set() if own is None else set(STAGES[: STAGES.index(own) + 1])
    wrong = sorted(
        m for m in imported_modules(MODULES[module]) if stage(m) is not None and stage(m) not in allowed
    )
    assert not wrong, f"{module} (stage {own or 'foundation'}) imports {wrong}"


def test_models_compose_ops_without_the_kernel_binding():
    for module, path in MODULES.items():
        if stage(module) == "models":
            assert not imported_modules(path) & {"partool.ops.kernels", "partool.ops.kernel_abi"}, module


def test_the_checker_sees_lazy_and_from_imports(tmp_path):
    """The checker itself: an import inside a function and a `from package import module` both count."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from partool.ops import kernels\n    import partool.export.triton\n")
    assert imported_modules(source) >= {"partool.ops.kernels", "partool.export.triton"}
