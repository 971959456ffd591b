"""The package's layers: inference needs no training code, and no layer imports one above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dxai"
ABOVE = ("dxai.training", "dxai.stages", "dxai.pipeline", "dxai.cli")
LOWER_LAYERS = ("nets", "explain", "evaluation", "measures")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_lower_layers_never_import_training_or_stages():
    offenders = [f"{path.relative_to(PACKAGE.parent)} imports {name}"
                 for layer in LOWER_LAYERS for path in sorted((PACKAGE / layer).glob("*.py"))
                 for name in imported_modules(path) if name.startswith(ABOVE)]
    assert offenders == []


def test_training_never_imports_stages_or_evaluation():
    offenders = [f"{path.name} imports {name}" for path in sorted((PACKAGE / "training").glob("*.py"))
                 for name in imported_modules(path) if name.startswith(("dxai.stages", "dxai.evaluation"))]
    assert offenders == []


def test_importing_inference_loads_no_training_stack():
    code = ("import sys, dxai.inference; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('albumentations', 'pytorch_lightning', "
            "'lightning') or m.startswith(('dxai.training', 'dxai.stages', 'dxai.data'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent)
    assert result.stdout.strip() == "[]"


def test_public_api_and_version():
    code = "import dxai; print(dxai.__version__); print(dxai.Explainer.__name__, dxai.CartoonX.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent)
    version, names = result.stdout.split("\n")[:2]
    assert version and names == "Explainer CartoonX"
