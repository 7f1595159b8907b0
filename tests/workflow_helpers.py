"""Run the Snakemake workflow on a tiny model in a temporary directory and read its dry-run plans."""

from __future__ import annotations

import copy
import ctypes
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from conftest import BROWN, REPO


def tiny_config(model_dir: Path) -> dict:
    return {
        "model": "tiny",
        "models": {"tiny": {"source": "local", "path": str(model_dir)}},
        "corpora": {"brown": {"source": "brown", "path": str(BROWN)}, "wiki": {"source": "wiki-summaries"}},
        "calibration": {"corpus": "brown", "nsamples": 4, "seqlen": 64, "seed": 0},
        "perplexity": {"corpus": "wiki", "seqlen": 64, "windows": 4, "bos": "auto"},
        "runtime": {"device": "cpu", "batch_size": 2, "eval_batch_size": 2},
        "studies": {
            "sweep": {"criteria": ["magnitude", "wanda"], "patterns": [0.5, "2:4"], "stream": "sequential"},
            "dense": {"criteria": ["wanda", "sparsegpt"], "patterns": [0.5], "stream": "dense", "zeroshot": True},
            "recovery": {
                "kind": "recovery", "criteria": ["wanda"], "patterns": [0.5],
                "recoveries": ["none", "recon:sublayer", "recon:matrix", "retrain:norms", "retrain:norms+masklora"],
            },
            "liar": {
                "kind": "structured", "criteria": ["fluctuation"], "targets": ["neurons"], "ratios": [0.25],
                "reconstructions": ["none", "liar"], "damping": 0.1, "speed": True,
            },
        },
        "zeroshot": {"tasks": ["lastword"], "items": 8, "seed": 0},
        "reconstruction": {"lr": 1e-3, "batch_size": 2},
        "retraining": {"lr": 1e-3, "rank": 4, "alpha": 8},
    }


def write_config(workdir: Path, config: dict, comment: str = "") -> Path:
    path = workdir / "config.yaml"
    path.write_text(comment + yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, checkout: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--replace-workflow-config", "--cores", "2", *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned(workdir: Path, *targets: str, checkout: Path = REPO) -> tuple[Counter, list[str]]:
    """Jobs a dry run would execute (rule -> count, 'all' excluded) and their reasons."""
    out = snakemake(workdir, "--dry-run", *targets, checkout=checkout).stdout
    rules = Counter(m.group(1) for m in re.finditer(r"^(?:local)?rule (\w+):", out, re.M))
    rules.pop("all", None)
    reasons = re.findall(r"^\s+reason: (.*)$", out, re.M)
    return rules, reasons


def plan_after(workdir: Path, config: dict, edit) -> tuple[Counter, list[str]]:
    """The dry-run plan after ``edit`` (a function changing a copy of ``config``); the config is restored."""
    edited = copy.deepcopy(config)
    edit(edited)
    write_config(workdir, edited)
    try:
        return planned(workdir)
    finally:
        write_config(workdir, config)


def plan_jobs(out: str) -> list[tuple[str, int, dict]]:
    """(rule, threads, resources) of every job in a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and res and rule.group(1) != "all":
            threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
            pairs = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
            jobs.append((rule.group(1), int(threads.group(1)) if threads else 1, pairs))
    return sorted(jobs, key=repr)  # the printed order of jobs varies from run to run


def planned_jobs(workdir: Path, *args: str) -> list[tuple[str, int, dict]]:
    return plan_jobs(snakemake(workdir, "--dry-run", *args).stdout)


def sbatch_call(rule: str, threads: int, resources: dict) -> str:
    """The sbatch call snakemake-executor-plugin-slurm builds for a job with these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    typed = Resources({k: int(v) if v.isdigit() else v for k, v in resources.items()})
    job = type("Job", (), {"resources": typed, "threads": threads, "name": rule})()
    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": rule, "account": "-A acct",
              "partition": f"-p {typed['slurm_partition']}", "workdir": ""}
    return get_submit_command(job, params) + set_gres_string(job)


# LLaMA-2-7B's config.json (meta-llama/Llama-2-7b-hf), as the Hub serves it: float16 weights.
LLAMA_2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float16",
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
}


def shaped_model_folder(folder: Path, config: dict) -> Path:
    """A Hugging Face folder with ``config`` and a tokenizer but a dummy weight file (one small tensor): enough
    for everything checked before any job, which reads the config, never the weights."""
    import json

    import torch
    from safetensors.torch import save_file

    from pruneflow.core.tiny import byte_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"model.norm.weight": torch.ones(4)}, str(folder / "model.safetensors"))
    byte_tokenizer().save_pretrained(folder)
    return folder


def fill_hub_cache(hf_home: Path, repo_id: str, config: dict) -> None:
    """Put a hub model's config.json into a Hugging Face cache (HF_HOME) as `hf download` leaves it."""
    import json

    commit = "0" * 40
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "config.json").write_text(json.dumps(config))


# ---------------------------------------------------------------- file permissions as any user meets them
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 24, 1, 2, 3  # linux/prctl.h, capability.h


def as_ordinary_user() -> None:
    """For ``subprocess``'s ``preexec_fn``: the child meets file permissions as any user does. The tests run as root,
    whom a mode of 000 does not stop, so the capabilities that let root ignore permissions are dropped from the child
    (it cannot become another user instead: this interpreter may lie under /root, closed to others)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0):
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def config_errors_as_ordinary_user(configs: list[dict], base: Path) -> list[str]:
    """What ``check_config`` (everything checked before any job) says of each config when run as any user
    (:func:`as_ordinary_user`), one child process for all: each one's error message, or "passed"."""
    code = (
        "import json, sys\nfrom pruneflow.spec.config import ConfigError\nfrom pruneflow.spec.preflight import check_config\n"
        "for config in json.loads(sys.argv[1]):\n"
        "    try:\n        check_config(config, sys.argv[2], sys.argv[3])\n        print('passed')\n"
        "    except ConfigError as err:\n        print(str(err).replace('\\n', ' '))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(configs), str(base), str(REPO)], capture_output=True,
                          text=True, timeout=300, preexec_fn=as_ordinary_user, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout.splitlines()
