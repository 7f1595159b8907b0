"""The workflow's own checks: `snakemake --lint` and `snakefmt --check` are clean, and the conda
environment every rule names lists what pyproject.toml depends on."""

import re
import subprocess
import sys
import tomllib

import yaml

from conftest import REPO


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_snakemake_lint_is_clean():
    proc = _run(sys.executable, "-m", "snakemake", "--lint", "--cores", "1")
    assert proc.returncode == 0 and "Lints for" not in proc.stdout + proc.stderr, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_snakefmt_leaves_every_rule_file_as_it_is():
    proc = _run(sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_conda_environment_lists_every_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs/pruneflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {_name(r) for r in project} <= {_name(r) for r in pip}
    assert "torch==2.13.0" in pip  # the CPU build's version, as constraints.txt
