"""Every command the README and the docs show is in tests/doc_commands.yaml, and runs.

A shown command is a line of a ```bash, ```sh, ```shell or ```console block (a leading "$ " prompt dropped,
comment lines skipped), or an inline code span that starts with snakemake, python, bash, pip or .venv/bin/
(HTML comments are not shown). Runner ``tiny`` commands run here, in registry order, in one temporary
directory that holds the repository's config.yaml with ``model: tiny`` and ``models: {tiny: {source: tiny}}``
(everything else as committed) and a copy of config/. Substituted, and nothing else:
``.venv/bin/snakemake`` → this interpreter's ``-m snakemake -s <repo>/Snakefile``; ``.venv/bin/python`` → this
interpreter; ``--cores N`` → ``--cores 2`` (CI's two cores); ``results/smollm2-135m/`` → ``results/tiny/``.

Runner ``hub`` commands (docs/own-model.md) run the same way, in their own directory with a copy of config/, the
stand-in Hub online (tests/hub_standin.py), and the one edit the page asks of the user: config/own-model.yaml's
model id replaced by the stand-in's tiny LLaMA (float16); ``--cores N`` becomes ``--cores 2`` (these run whole
studies). Nothing else is substituted.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

REGISTRY = yaml.safe_load((REPO / "tests" / "doc_commands.yaml").read_text())
RUNNERS = {"setup", "tiny", "hub", "slurm", "faults"}
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
COMMAND_WORDS = re.compile(r"^((snakemake|python|bash|pip) |\.venv/bin/\S)")  # a word, not the tool's name alone


def shown_commands(text: str) -> list[str]:
    """The commands a page shows (see the module docstring)."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    found = []
    for lang, body in FENCE.findall(text):
        if lang in ("bash", "sh", "shell", "console"):
            lines = (line.strip().removeprefix("$ ") for line in body.splitlines())
            found += [line for line in lines if line and not line.startswith("#")]
    prose = FENCE.sub("", text)
    found += [span.strip() for span in re.findall(r"`([^`\n]+)`", prose) if COMMAND_WORDS.match(span.strip())]
    return found


def test_shown_commands_are_found_in_blocks_and_inline_code():
    page = ("```bash\n$ .venv/bin/snakemake -n\n# a comment\n\n```\n```yaml\nsnakemake: no\n```\n"
            "Run `snakemake --cores 1 x` or `--notemp` with `snakemake`.\n<!-- `python hidden.py` -->\n")
    assert shown_commands(page) == [".venv/bin/snakemake -n", "snakemake --cores 1 x"]


def test_every_shown_command_is_registered_and_every_entry_shown():
    shown = {cmd: page.name for page in PAGES for cmd in shown_commands(page.read_text())}
    registered = [e["command"] for e in REGISTRY]
    assert len(registered) == len(set(registered)), "a command is registered twice"
    assert {e["runner"] for e in REGISTRY} <= RUNNERS and all(e.get("note") for e in REGISTRY)
    unregistered = {cmd: page for cmd, page in shown.items() if cmd not in registered}
    assert not unregistered, f"shown but not in tests/doc_commands.yaml: {unregistered}"
    assert not set(registered) - set(shown), f"registered but on no page: {set(registered) - set(shown)}"


def test_setup_commands_are_what_ci_and_the_default_run():
    setup = [e["command"] for e in REGISTRY if e["runner"] == "setup"]
    assert len(setup) == 2 and all(c.startswith("bash setup.sh && ") for c in setup)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    tests, pipeline = sorted(setup, key=lambda c: "pytest" not in c)
    assert tests in ci, ".ci/run must run the README's test command verbatim"
    # The pipeline command on the real default, as a dry run of every job (the run itself takes 20 minutes;
    # --forceall: after a finished run a plain dry run plans nothing).
    proc = subprocess.run(_substitute(pipeline.removeprefix("bash setup.sh && ")) + ["-n", "--forceall"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0 and "study_report" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("runner", ["slurm", "faults"])
def test_slurm_and_fault_commands_have_their_runner(runner):
    if any(e["runner"] == runner for e in REGISTRY):
        module = REPO / "tests" / f"test_{runner}.py"
        assert module.is_file() and "doc_commands.yaml" in module.read_text()


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def _substitute(command: str) -> list[str]:
    command = re.sub(r"--cores \d+", "--cores 2", command).replace("results/smollm2-135m/", "results/tiny/")
    words = []
    for word in shlex.split(command):
        if word == ".venv/bin/snakemake":
            words += [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
        else:
            words.append(sys.executable if word == ".venv/bin/python" else word)
    return words


def test_substitution_rule():
    assert _substitute(".venv/bin/snakemake --cores 2 results/smollm2-135m/x") == [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", "results/tiny/x"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("doc-commands")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(model="tiny", models={"tiny": {"source": "tiny"}})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(REPO / "config", workdir / "config")
    return workdir


TINY = [e for e in REGISTRY if e["runner"] == "tiny"]
HUB = [e for e in REGISTRY if e["runner"] == "hub"]


@pytest.fixture(scope="module")
def hub_workdir(tmp_path_factory, hub) -> tuple[Path, dict]:
    from hub_repos import TINY_REPO

    workdir = tmp_path_factory.mktemp("doc-commands-hub")
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    shutil.copytree(REPO / "config", workdir / "config")
    own = workdir / "config" / "own-model.yaml"
    text = own.read_text()
    assert text.count("id: meta-llama/Llama-2-7b-hf") == 1  # the line the page tells the user to edit
    own.write_text(text.replace("id: meta-llama/Llama-2-7b-hf", f"id: {TINY_REPO}"))
    return workdir, {**_env(), **hub.env(workdir / "hf")}


@pytest.mark.slow
@pytest.mark.parametrize("entry", HUB, ids=[e["command"].removeprefix(".venv/bin/") for e in HUB])
def test_hub_command_runs_as_written(hub_workdir, entry):
    workdir, env = hub_workdir
    command = _substitute(entry["command"])
    if "--cores" in command:
        command[command.index("--cores") + 1] = "2"
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for path in entry.get("creates", []):
        assert (workdir / path).exists(), path


@pytest.mark.slow
@pytest.mark.parametrize("entry", TINY, ids=[e["command"].removeprefix(".venv/bin/") for e in TINY])
def test_tiny_command_runs_as_written(workdir, entry):
    proc = subprocess.run(_substitute(entry["command"]), cwd=workdir, capture_output=True, text=True, timeout=900, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for path in entry.get("creates", []):
        assert (workdir / path.replace("results/smollm2-135m/", "results/tiny/")).exists(), path
