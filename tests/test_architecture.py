"""The layer rules of docs/architecture.md, read from the source: which library package may
import which, and no Kedro in the library (tests/test_imports.py checks private names and
import cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fkr_kedro"

# Library package -> the project packages it may import (besides itself).
LIBRARY = {
    "modeling": set(),
    "knowledge": {"modeling"},
    "quantization": {"modeling"},
    "analysis": {"modeling", "knowledge", "quantization"},
    "scaling": {"modeling", "knowledge", "quantization", "analysis"},
    "capacity": {"modeling", "knowledge", "quantization", "analysis", "scaling"},
    "reporting": {"analysis", "quantization"},
    "tracking": set(),
    "scaleout": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) for every import in the file, at any depth."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [alias.name for alias in node.names]))
    return out


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _project_target(target: str, names: list[str]) -> list[str]:
    """The project modules an import statement reads (``from pkg import module`` included)."""
    if not target.startswith("fkr_kedro"):
        return []
    found = [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULES]
    return found or [target]


@pytest.mark.parametrize("package", sorted(LIBRARY))
def test_library_packages_import_only_the_layers_below_and_never_kedro(package):
    problems = []
    for module, path in MODULES.items():
        if not module.startswith(f"fkr_kedro.{package}"):
            continue
        for target, names in _imports(path):
            if target.split(".")[0] in ("kedro", "kedro_datasets", "kedro_mlflow"):
                problems.append(f"{module} imports {target}")
            for imported in _project_target(target, names):
                layer = imported.split(".")[1] if imported.count(".") else ""
                if layer and layer != package and layer not in LIBRARY[package]:
                    problems.append(f"{module} imports {imported} ({layer} is not below {package})")
    assert not problems, "\n".join(problems)


def test_no_hook_imports_a_pipeline():
    """The hooks read the pipelines through Kedro's registry (kedro_config.project_pipelines),
    never by importing them: a hook runs for every pipeline, whichever is asked for."""
    problems = [
        f"{module} imports {imported}"
        for module, path in MODULES.items()
        if module.startswith("fkr_kedro.hooks")
        for target, names in _imports(path)
        for imported in _project_target(target, names)
        if imported.startswith("fkr_kedro.pipelines")
    ]
    assert not problems, "\n".join(problems)
