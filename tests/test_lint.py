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


def _imported_modules(paths) -> set[str]:
    """Top-level modules imported by the files under ``paths`` (absolute imports; .smk files by their lines)."""
    import ast

    found = set()
    for path in paths:
        text = path.read_text()
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    found.add(node.module.split(".")[0])
        else:
            imports = re.findall(r"^\s*(?:from\s+(\w+)[\w.]*\s+import|import\s+(\w+))", text, re.M)
            found |= {a or b for a, b in imports}
    return found


def test_every_imported_package_is_declared():
    """A package the code imports comes from a declared dependency, not from another one's dependencies
    (tests may also use the dev extra's)."""
    from importlib.metadata import packages_distributions

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    dev = declared | {_name(r) for r in project["optional-dependencies"]["dev"]}
    dists = packages_distributions()
    local = {"pruneflow", "conftest", *(p.stem for p in (REPO / "tests").glob("*.py"))}

    def undeclared(paths, allowed):
        missing = {}
        for module in _imported_modules(paths) - set(sys.stdlib_module_names) - local - {"snakemake_interface_common"}:
            names = {_name(d) for d in dists.get(module, [module])}
            if not names & allowed:
                missing[module] = sorted(names)
        return missing

    code = [*(REPO / "src").rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "rules").glob("*.smk"),
            REPO / "Snakefile"]
    assert undeclared(code, declared) == {}
    assert undeclared((REPO / "tests").glob("*.py"), dev) == {}


def _pruneflow_imports(root) -> dict[str, set[str]]:
    """{module: the pruneflow modules it imports}, at module level or inside a function alike."""
    import ast

    modules = {".".join(("pruneflow", *f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): f
               for f in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pruneflow"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("pruneflow")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_library_has_no_import_cycle():
    """Each module can be read on its own: none imports, even inside a function, a module that imports it back."""
    graph = _pruneflow_imports(REPO / "src" / "pruneflow")
    cycles = set()
    for start in graph:  # a path from start back to start, depth first
        stack = [(start, (start,))]
        while stack:
            module, path = stack.pop()
            for nxt in graph[module]:
                if nxt == start:
                    cycles.add(" -> ".join((*path, start)))
                elif nxt not in path and len(path) < 6:
                    stack.append((nxt, (*path, nxt)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_ruff_finds_nothing():
    """Errors, pyflakes, warnings and import order at one line length (pyproject.toml's [tool.ruff])."""
    proc = _run(sys.executable, "-m", "ruff", "check", "--no-cache", "src", "scripts", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_link_is_tracked():
    """A committed link to a local folder (a worktree's .venv or data, linked to the main checkout's) replaces the real
    folder wherever it is checked out: git holds no symbolic links here."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-s"], capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[1] for line in listed.splitlines() if line.startswith("120000 ")] == []
