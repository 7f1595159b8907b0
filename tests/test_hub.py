"""Before any job, every Hub repository a run still needs is cached or reachable (pruneflow.spec.hub), checked
against the stand-in Hub in child processes (the Hugging Face libraries read their variables when imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO
from hub_repos import TINY_REPO

SCRIPT = """
import json, sys
from pruneflow.spec.hub import HubNeed, HubSourceError, check_hub_needs
try:
    check_hub_needs([HubNeed(kind, repo, "a test") for kind, repo in json.loads(sys.argv[1])])
    print("ok")
except HubSourceError as err:
    print(err)
"""


def check(env: dict, *needs: tuple[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(needs)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_online_the_hub_answers_or_names_what_it_cannot_serve(hub, tmp_path):
    env = hub.env(tmp_path / "hf")
    assert check(env, ("model", TINY_REPO), ("dataset", "allenai/c4")) == "ok"
    out = check(env, ("model", TINY_REPO), ("dataset", "nobody/missing"))
    assert "dataset 'nobody/missing' (a test): RepositoryNotFoundError" in out and TINY_REPO not in out


def test_offline_a_cached_repository_passes_and_a_missing_one_is_named_with_the_fix(hub, tmp_path):
    env = hub.env(tmp_path / "hf")
    offline = {**env, "HF_HUB_OFFLINE": "1"}

    def fill(filename):
        code = f"from huggingface_hub import hf_hub_download; hf_hub_download({TINY_REPO!r}, {filename!r})"
        subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True, capture_output=True, timeout=120)

    fill("config.json")  # what sizing the jobs reads: not enough to run them
    assert f"model {TINY_REPO!r}" in check(offline, ("model", TINY_REPO))
    fill("model.safetensors")
    assert check(offline, ("model", TINY_REPO)) == "ok"
    out = check(offline, ("model", TINY_REPO), ("dataset", "Salesforce/wikitext"))
    assert "offline" in out and "`hf download Salesforce/wikitext --repo-type dataset`" in out and TINY_REPO not in out
