"""config/paper.yaml end to end with the tiny model in its place, through the real download code against the
stand-in Hub (tests/hub_standin.py): a ``source: hub`` checkpoint in its own float16, C4 and WikiText-2 read as the
reference code reads them (128 x 2048 calibration windows, perplexity on windows of the model's 2048 positions),
and the seven zero-shot tasks scored in full. Online; then offline from the cache that run filled, with the server
stopped; then with neither, where the run stops before any job naming what is missing.

One cut, for time (CI's 2 cores): the studies are the Wanda table's Wanda 50% row (one pruned variant beside the
dense model) instead of paper.yaml's 34 variants; every other setting is paper.yaml's, runtime aside (CPU, a
fixed evaluation batch: runtime settings never change a result)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from conftest import REPO
from hub_repos import TINY_REPO, c4_repo, tiny_model_repo, wikitext_repo, zeroshot_repos
from hub_standin import HubStandIn
from workflow_helpers import snakemake, write_config

pytestmark = pytest.mark.slow
TASKS = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def paper_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert config["zeroshot"]["tasks"] == TASKS and config["zeroshot"]["limit"] is None
    assert config["calibration"]["protocol"] == config["perplexity"]["protocol"] == "reference"
    config["models"] = {"llama-7b": {"source": "hub", "id": TINY_REPO}}  # dtype auto: the checkpoint's float16
    config["runtime"].update(device="cpu", eval_batch_size=4)
    study = config["studies"]["wanda_table"]
    config["studies"] = {"wanda_table": {**study, "criteria": ["wanda"], "patterns": [0.5]}}
    return config


def run(workdir, env: dict, *args: str, check: bool = True):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return snakemake(workdir, *args, check=check)


def corpus_files(workdir) -> dict:
    return {str(p.relative_to(workdir)): p.read_text() for p in (workdir / "results/corpora").rglob("*.jsonl")}


def results(workdir) -> dict:
    """Every evaluation result of the run, by its path below results/llama-7b/eval (seconds and versions dropped)."""
    out = {}
    for path in sorted((workdir / "results/llama-7b/eval").rglob("*.json")):
        value = json.loads(path.read_text())
        out[str(path.relative_to(workdir / "results/llama-7b/eval"))] = {
            k: v for k, v in value.items() if k not in ("seconds", "versions")}
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    hub = HubStandIn()
    hub.add("model", TINY_REPO, tiny_model_repo("float16"))
    hub.add("dataset", "allenai/c4", c4_repo())
    hub.add("dataset", "Salesforce/wikitext", wikitext_repo())
    for repo, files in zeroshot_repos().items():
        hub.add("dataset", repo, files)
    hub.start()
    workdir = tmp_path_factory.mktemp("paper")
    write_config(workdir, paper_config())
    home = workdir / "hf"
    try:
        run(workdir, hub.env(home))
    finally:
        hub.stop()
    online = results(workdir)
    corpora = corpus_files(workdir)
    dense_summary = json.loads((workdir / "results/llama-7b/dense/summary.json").read_text())
    shutil.rmtree(workdir / "results")
    # Offline, every job that reads the Hub (the model, the corpora, the dense model's evaluations) reruns from
    # the cache (the pruned variant would only repeat the online run's computation on the same inputs).
    dense = [f"results/llama-7b/eval/{k}" for k in online if k.startswith("dense/")]
    run(workdir, {**hub.env(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, *dense)
    offline = results(workdir), corpus_files(workdir)
    shutil.rmtree(workdir / "results")
    neither = run(workdir, {**hub.env(workdir / "empty"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, check=False)
    return (online, corpora), offline, neither, dense_summary, workdir, hub.requests


def test_online_paper_yaml_runs_in_the_checkpoints_dtype_and_scores_every_item(runs):
    (online, _), _, _, summary, _, requests = runs
    assert summary["dtype"] == "float16"
    ppl = [v for k, v in online.items() if "/ppl-" in k]
    assert len(ppl) == 2 and all(v["protocol"] == "reference" and v["seqlen"] == 2048 for v in ppl)
    assert ppl[0]["tokens"] % 2047 == 0 and ppl[0]["tokens"] // 2047 >= 2  # whole windows of the model's context
    zeroshot = {k: v for k, v in online.items() if "/zeroshot-" in k}
    assert sorted(k.split("/")[-1] for k in zeroshot) == sorted([f"zeroshot-{t}-all.json" for t in TASKS] * 2)
    assert all(v["n"] == 24 and not v["limited"] for v in zeroshot.values())  # every item the Hub serves
    assert any(r.startswith("GET /datasets/allenai/c4/resolve/") for r in requests)


def test_offline_the_cache_that_run_filled_gives_the_same_numbers(runs):
    (online, corpora), (offline, offline_corpora), *_ = runs
    assert len(online) == 2 * (1 + len(TASKS)) and offline == {k: v for k, v in online.items() if k.startswith("dense/")}
    assert "results/corpora/wikitext2/eval.jsonl" in offline_corpora
    assert offline_corpora == {k: v for k, v in corpora.items() if k in offline_corpora}


def test_with_neither_the_run_stops_before_any_job_naming_each_repository(runs):
    _, _, neither, _, workdir, _ = runs
    out = neither.stdout + neither.stderr
    assert neither.returncode != 0 and not (workdir / "results").exists()
    assert TINY_REPO in out and "hf download" in out


PAPER_FILES = ["paper.yaml", "paper-llama2.yaml", "perp.yaml", "freelunch.yaml", "liar.yaml"]


@pytest.mark.parametrize("name", PAPER_FILES)
def test_every_papers_configuration_plans_against_the_stand_in_hub(name, hub, tmp_path):
    """Each paper's configuration as committed: its model's config.json comes from the stand-in Hub (the real
    model's shape: tests/hub_repos.py CONFIG_ONLY), its corpora and tasks are checked there, and with memory
    declared (whole-model retraining needs more than a GPU: 100 GB for PERP's OPT-2.7B) it plans the paper's jobs."""
    shutil.copy(REPO / "config" / name, tmp_path / "config.yaml")
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    proc = run(tmp_path, hub.env(tmp_path / "hf"), "--dry-run", "--resources", "mem_mb=10000000")
    rules = re.findall(r"^(?:local)?rule (\w+):", proc.stdout, re.M)
    studies = config["studies"]
    assert rules.count("study_report") == len(studies) and rules.count("model") == 1
    if any(s.get("zeroshot") for s in studies.values()):
        assert rules.count("zeroshot_standard") % len(config["zeroshot"]["tasks"]) == 0 and "zeroshot_standard" in rules
    assert not (tmp_path / "results").exists()
