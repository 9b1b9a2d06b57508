"""The package layout the README promises: the dataset side loads no JAX, the packages import one
another in one direction only, and nothing imports lazily."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# convert imports torch inside functions on purpose: torch is an optional dependency
PACKAGES = ("rwkv_jax", "editing", "rime", "rwkv_lm_eval")
# the layering: each package imports only those listed for it, so no circle can form
MAY_IMPORT = {
    "rwkv_jax": set(),
    "convert": {"rwkv_jax"},
    "editing": {"rwkv_jax"},
    "rime": {"editing", "rwkv_jax", "convert"},
    "rwkv_lm_eval": {"rwkv_jax", "convert"},
}


def _imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            found |= {n.split(".")[0] for n in names}
    return (found & set(MAY_IMPORT)) - {package}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_one_another_in_one_direction(package):
    assert _imported_packages(package) <= MAY_IMPORT[package]


def test_importing_the_dataset_side_loads_no_jax():
    code = "import sys, rime.data; print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_inside_a_function(package):
    """Function-local imports hide circles and costs; every import sits at a module's top."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{path.relative_to(ROOT)}:{inner.lineno}" for inner in ast.walk(node)
                          if isinstance(inner, (ast.Import, ast.ImportFrom))]
    assert not found, found


def test_the_api_list_matches_the_code():
    out = subprocess.run([sys.executable, "scripts/api_doc.py", "--check"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
