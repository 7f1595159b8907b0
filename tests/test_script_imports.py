"""Every name a workflow script imports exists: a script runs only inside a Snakemake job, so a library
rename would otherwise surface only in the slow workflow tests."""

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[1] / "scripts").glob("*.py"))


def _submodule(package: str, name: str) -> bool:
    """``from pruneflow.report import tables`` imports a submodule, an attribute only once something imported it."""
    try:
        importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_scripts_imports_resolve(script):
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pruneflow"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name) and not _submodule(node.module, a.name)]
            assert not missing, f"{script.name}: {node.module} has no {missing}"
