"""The package's layers (docs/ARCHITECTURE.md): models/ below pipelines/, and train/ and
evaluation/ beside each other, both on top of models/, pipelines/ and data/. Read from the
source's own import statements, top-level and inside functions alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import serialgen

ROOT = Path(serialgen.__file__).parent
# package -> the packages it must never import
FORBIDDEN = {
    "models": {"pipelines", "train", "evaluation", "cli"},
    "pipelines": {"train", "evaluation", "cli"},
    "data": {"models", "pipelines", "train", "evaluation", "cli"},
    "train": {"evaluation", "cli"},
    "evaluation": {"train", "cli"},
    "world": {"models", "pipelines", "train", "evaluation", "data", "cli"},
}


def imported_packages(path: Path) -> set[str]:
    """The serialgen subpackages a module imports (relative or absolute)."""
    package = path.relative_to(ROOT).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                base = list(package[:len(package) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # `from . import x` at the top: x is a subpackage or module
                    found |= {alias.name for alias in node.names}
                    continue
                found.add(parts[0])
            elif node.module and node.module.startswith("serialgen."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("serialgen.")}
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_a_layer_above_or_beside_it(package):
    broken = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & FORBIDDEN[package])
              for p in sorted((ROOT / package).rglob("*.py"))}
    assert not {k: v for k, v in broken.items() if v}


def test_the_checker_sees_relative_and_function_level_imports(tmp_path):
    module = ROOT / "evaluation" / "_probe_for_test.py"
    module.write_text("def f():\n    from ..train.stage1 import main\n    from ..models import judge\n")
    try:
        assert imported_packages(module) == {"train", "models"}
    finally:
        module.unlink()
