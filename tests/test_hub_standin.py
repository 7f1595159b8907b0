"""The stand-in Hub answers the real clients: transformers, huggingface_hub and datasets download through it,
and what they cached serves them offline once it is stopped. Clients run in child processes (they read
HF_ENDPOINT when imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hub_repos import C4_FILES, TINY_REPO, TINY_REPO_BF16, c4_repo, tiny_model_repo, wikitext_repo
from hub_standin import HubStandIn

LOAD = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
from datasets import load_dataset
from huggingface_hub import hf_hub_download
out = {}
for repo in sys.argv[1:-1]:
    model = AutoModelForCausalLM.from_pretrained(repo, dtype="auto")
    out[repo] = [str(model.dtype), AutoTokenizer.from_pretrained(repo)("a b")["input_ids"]]
out["wikitext"] = load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="test")["text"][:4]
out["c4"] = open(hf_hub_download("allenai/c4", sys.argv[-1], repo_type="dataset"), "rb").read()[:2].hex()
print(json.dumps(out))
"""


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LOAD, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_clients_download_through_the_stand_in_then_read_their_cache_offline(tmp_path):
    hub = HubStandIn()
    hub.add("model", TINY_REPO, tiny_model_repo("float16"))
    hub.add("model", TINY_REPO_BF16, tiny_model_repo("bfloat16"))
    hub.add("dataset", "Salesforce/wikitext", wikitext_repo())
    hub.add("dataset", "allenai/c4", c4_repo())
    hub.start()
    try:
        online = _run(hub.env(tmp_path / "hf"), TINY_REPO, TINY_REPO_BF16, C4_FILES["train"])
    finally:
        hub.stop()
    assert online.returncode == 0, online.stderr[-3000:]
    got = json.loads(online.stdout.splitlines()[-1])
    # the checkpoint's dtype, and a tokenizer that puts its BOS (id 0) first, as LLaMA's does
    assert got[TINY_REPO][0] == "torch.float16" and got[TINY_REPO_BF16][0] == "torch.bfloat16"
    assert got[TINY_REPO][1][0] == 0 and len(got[TINY_REPO][1]) == 4  # BOS, then the three bytes of "a b"
    assert got["wikitext"][0] == "" and got["wikitext"][1].startswith(" = ")  # empty rows kept, as the real one
    assert got["c4"] == "1f8b"  # the gzip file itself
    assert any(r.startswith("GET /api/datasets/Salesforce/wikitext/tree/") for r in hub.requests)

    offline = _run({**hub.env(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
                   TINY_REPO, TINY_REPO_BF16, C4_FILES["train"])
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert json.loads(offline.stdout.splitlines()[-1]) == got

    neither = _run({**hub.env(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}, TINY_REPO, C4_FILES["train"])
    assert neither.returncode != 0 and "offline" in neither.stderr  # the library does not name the repository: PruneFlow must


def test_unknown_repositories_and_files_answer_404_with_the_hubs_error_code(hub):
    import urllib.error
    import urllib.request

    for path, code in [("/no/such/resolve/main/config.json", "RepoNotFound"),
                       (f"/{TINY_REPO}/resolve/main/no-such-file.bin", "EntryNotFound"),
                       ("/api/datasets/no/such", "RepoNotFound")]:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(hub.endpoint + path, timeout=10)
        assert err.value.code == 404 and err.value.headers["X-Error-Code"] == code
    info = json.load(urllib.request.urlopen(f"{hub.endpoint}/api/datasets/allenai/ai2_arc/revision/main", timeout=10))
    files = {s["rfilename"] for s in info["siblings"]}
    assert {"ARC-Easy/validation-00000-of-00001.parquet", "ARC-Challenge/test-00000-of-00001.parquet"} <= files
    assert [c["config_name"] for c in info["cardData"]["configs"]] == ["ARC-Easy", "ARC-Challenge"]
