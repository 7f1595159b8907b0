"""The workflow on a live one-node SLURM (tests/slurm_cluster.py) through profiles/slurm, on the tiny model.

The commands are the tests/doc_commands.yaml entries with runner ``slurm``, run in order in one temporary
directory holding SLURM_CONFIG (one study of each kind) as config.yaml, as written but for:
``.venv/bin/snakemake`` → this interpreter's ``-m snakemake -s <repo>/Snakefile``; ``profiles/...`` → the
repository's. The file each command's ``--configfile`` names holds SLURM_CONFIG, as config.yaml does. Before
them the first entry runs once with the claims ledger's memory set below what it needs (and the on-demand exports
as targets), so SLURM
kills that job; the entries then resume the run.

SLURM comes from Debian's packages (installed when missing). A machine where they cannot be installed or
started FAILS this module with the reason: a skip would leave the suite green with the cluster path
unchecked. Deselect it explicitly with ``-m "not slurm"``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

import slurm_cluster
from conftest import REPO
from slurm_cluster import Cluster, install
from workflow_helpers import plan_jobs, sbatch_call, tiny_config, write_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

COMMANDS = [e["command"] for e in yaml.safe_load((REPO / "tests/doc_commands.yaml").read_text()) if e["runner"] == "slurm"]
PROFILE = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
KILL_MB = 200  # a job's two Snakemake processes and its script hold about 500 MB
EXPORTS = ["results/tiny/export/pruned/brown-n4-l64-s0/wanda-u0.5-seq", "results/export/structured"]  # one variant; a study
CLAIMS = {"claims": [{"id": "sparsegpt-vs-magnitude", "paper": "test", "claim": "SparseGPT beats magnitude.", "holds_if": "<",
                      "compare": [{"table": "owl", "method": "sparsegpt"}, {"table": "owl", "method": "magnitude"}]}]}


def slurm_config(model_dir) -> dict:
    """Every rule of the workflow in few jobs: one corpus, one study of each kind."""
    config = tiny_config(model_dir)
    del config["corpora"]["wiki"]
    config["perplexity"]["corpus"] = "brown"
    config["claims"] = "claims.yaml"
    config["studies"] = {
        "owl": {"criteria": ["magnitude", "sparsegpt"], "patterns": [0.5], "stream": "dense",
                "allocation": "owl", "owl_m": 3, "owl_lambda": 0.1},
        "recovery": {"kind": "recovery", "criteria": ["wanda"], "patterns": [0.5], "recoveries": ["recon:matrix"],
                     "zeroshot": True},
        "structured": {"kind": "structured", "criteria": ["magnitude"], "targets": ["neurons"], "ratios": [0.25],
                       "reconstructions": ["liar"], "speed": True},
        "sensitivity": {"kind": "sensitivity", "criteria": ["magnitude"], "patterns": [0.5], "windows": 2},
    }
    return config


def as_run_here(command: str) -> list[str]:
    """A registry command with the substitutions of the module docstring."""
    words, out = iter(shlex.split(command)), []
    for word in words:
        if word == ".venv/bin/snakemake":
            out += [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
        elif word.startswith("profiles/"):
            out.append(str(REPO / word))
        else:
            out.append(word)
    return out


def write_configs(workdir, config: dict) -> None:
    """``config`` as config.yaml and at every path the commands' ``--configfile`` names."""
    write_config(workdir, config)
    for path in {m for c in COMMANDS for m in re.findall(r"--configfile (\S+)", c)}:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text((workdir / "config.yaml").read_text())


def submitted(call: list[str]) -> tuple:
    """(rule, partition, -t, --mem, CPUs, --gpus, --gres, account) of an sbatch call's arguments."""
    opts, words = {}, iter(call)
    for word in words:
        if word in ("-p", "-t", "--mem", "--comment", "-A"):
            opts[word] = next(words)
        elif word.startswith(("--cpus-per-task=", "--gpus=", "--gres=")):
            key, value = word.split("=", 1)
            opts[key] = value
    rule = opts["--comment"].removeprefix("rule_").split("_wildcards_")[0]
    return (rule, opts.get("-p"), opts.get("-t"), opts.get("--mem"), opts.get("--cpus-per-task"),
            opts.get("--gpus"), opts.get("--gres"), opts.get("-A"))


def declared(jobs, mem_of=None) -> Counter:
    """What each planned job should get from sbatch (``mem_of`` overrides a rule's memory)."""
    account = PROFILE["default-resources"]["slurm_account"]
    return Counter((rule, res["slurm_partition"], res["runtime"], (mem_of or {}).get(rule, res["mem_mb"]), str(threads),
                    None, None, account) for rule, threads, res in jobs)


def test_a_machine_that_cannot_install_slurm_gets_the_reason_not_a_pass(monkeypatch):
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name: None)
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    reason = install()
    assert reason and "needs root and apt-get: slurm-wlm munge" in reason


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = install()
    if reason:
        pytest.fail(f"no SLURM for tests/test_slurm.py: {reason}", pytrace=False)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as err:
        cluster.stop()
        pytest.fail(f"no SLURM for tests/test_slurm.py: {err}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, tiny_model_dir):
    workdir = tmp_path_factory.mktemp("slurm_run")
    write_configs(workdir, slurm_config(tiny_model_dir))
    (workdir / "claims.yaml").write_text(yaml.safe_dump(CLAIMS, sort_keys=False))

    def run(cmd):
        before = len(cluster.sbatch_calls())
        proc = subprocess.run(cmd, cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=1200)
        return SimpleNamespace(rc=proc.returncode, out=proc.stdout + proc.stderr,
                               calls=[submitted(c) for c in cluster.sbatch_calls()[before:]])

    first = as_run_here(COMMANDS[0])
    # a dry run caps threads at --cores (1 when none is given); a cluster run caps nothing
    plan = plan_jobs(run([*first, "--dry-run", "--cores", str(os.cpu_count()), "all", *EXPORTS]).out)
    # --set-resources on the command line replaces the profile's whole set-resources: restate them
    profile_set = [f"{rule}:{k}={v}" for rule, res in PROFILE["set-resources"].items() for k, v in res.items()]
    killed = run([*first, "all", *EXPORTS, "--set-resources", *profile_set, f"claims:mem_mb={KILL_MB}"])
    killed.tables = sorted(p.name for p in (workdir / "results/tables").iterdir())
    killed.slurm_logs = [p.read_text() for p in (workdir / ".snakemake/slurm_logs/rule_claims").glob("*.log")]
    killed.rule_log = (workdir / "results/logs/report/claims.log").exists()
    entries = [run(as_run_here(c)) for c in COMMANDS]
    return SimpleNamespace(workdir=workdir, plan=plan, killed=killed, entries=entries, cluster=cluster)


def test_a_job_over_its_memory_is_killed_reported_failed_with_its_log_and_leaves_no_result(runs):
    killed = runs.killed
    assert killed.rc != 0 and re.findall(r"^Error in rule (\w+):", killed.out, re.M) == ["claims"], killed.out[-3000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: '(FAILED|OUT_OF_MEMORY)'", killed.out)
    assert len(killed.slurm_logs) == 1 and "exceeded memory limit" in killed.slurm_logs[0].lower()
    assert killed.rule_log
    studies = slurm_config("")["studies"]
    made = ("csv", "csv.manifest", "md", "tex")  # a CSV is read back: its manifest beside it
    assert killed.tables == sorted(f"{s}.{ext}" for s in studies for ext in made)  # no claims.*


def test_the_documented_commands_resume_and_finish_with_every_rule_tables_and_ledger(runs):
    assert [e.rc for e in runs.entries] == [0] * len(COMMANDS), runs.entries[0].out[-3000:]
    assert [c[0] for c in runs.entries[0].calls] == ["claims"]  # the rerun ran only what was killed
    rules = set(re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (REPO / "rules").glob("*.smk")), re.M))
    assert {c[0] for c in runs.killed.calls} == rules  # the exports too, the on-demand targets
    tables = runs.workdir / "results/tables"
    for study in slurm_config("")["studies"]:
        assert len(pd.read_csv(tables / f"{study}.csv")) >= 2, study  # the dense row and a variant
    ledger = pd.read_csv(tables / "claims.csv", keep_default_na=False).set_index("id")
    assert ledger.loc["sparsegpt-vs-magnitude", "outcome"] in ("holds", "does not hold")
    # the report needs no --cores (the speed rule's threads once did)
    assert any("--cores" not in c and "--report report.html" in c for c in COMMANDS)
    html = (runs.workdir / "report.html").read_text()
    assert all(f"{study}.png" in html for study in slurm_config("")["studies"])


def test_the_cluster_has_no_accounting_so_the_profile_status_command_is_what_worked(runs):
    # sacct, the plugin's default, fails here; the run above finished on the profile's squeue
    sacct = runs.cluster.run("sacct", "-X", "--noheader", check=False)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr.lower(), sacct
    assert PROFILE["slurm-status-command"] == "squeue"


def test_sbatch_got_what_the_rules_and_profile_declare(runs):
    assert Counter(runs.killed.calls) == declared(runs.plan, {"claims": str(KILL_MB)})
    assert Counter(runs.entries[0].calls) == declared([j for j in runs.plan if j[0] == "claims"])
    # the plugin's own sbatch call built offline from the plan is what sbatch received: the GPU test below
    # builds its calls the same way
    offline = Counter(submitted(shlex.split(sbatch_call(rule, threads, res)))[:-1]
                      for rule, threads, res in runs.plan if rule != "claims")
    assert offline == Counter(c[:-1] for c in runs.killed.calls if c[0] != "claims")


def test_cuda_jobs_ask_sbatch_for_one_gpu_on_a_gpu_partition(runs, tiny_model_dir):
    config = slurm_config(tiny_model_dir)
    config["runtime"]["device"] = "cuda"
    cuda_dir = runs.workdir / "cuda"
    cuda_dir.mkdir()
    write_configs(cuda_dir, config)
    (cuda_dir / "claims.yaml").write_text(yaml.safe_dump(CLAIMS, sort_keys=False))
    proc = subprocess.run([*as_run_here(COMMANDS[0]), "--dry-run"], cwd=cuda_dir, env=runs.cluster.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cpu_device = {rule for rule, _, res in runs.plan if res.get("gpu") == "0"}  # rules that claim the device
    asking = set()
    for rule, threads, res in plan_jobs(proc.stdout):
        call = sbatch_call(rule, threads, res)
        assert "--gres" not in call, call
        if res.get("gpu") == "1":
            asking.add(rule)
            assert call.count("--gpus=1") == 1 and res["slurm_partition"] != PROFILE["default-resources"]["slurm_partition"], call
        else:
            assert "--gpus" not in call, call
    assert asking == cpu_device and {"perplexity", "recover", "prune_structured"} <= asking
    # the profile puts exactly the rules that claim the device on a GPU partition (a rule added without a partition
    # would queue on cpu): those planned here, and the rules made from them by `use rule` (zeroshot_standard, for
    # standard lm-eval tasks, which this configuration does not ask for)
    text = "".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    claiming = asking | {child for parent, child in re.findall(r"^use rule (\w+) as (\w+)", text, re.M) if parent in asking}
    assert claiming == {rule for rule, res in PROFILE["set-resources"].items() if res.get("slurm_partition") == "gpu"}
