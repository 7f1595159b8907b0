"""OWL and per-block sensitivity through the workflow on a tiny model: tables, figures, the per-block
sparsity each variant records, and what a changed lambda reruns (from dry-run plans)."""

import json

import pandas as pd
import pytest

from pruneflow.core.variants import read_record
from workflow_helpers import plan_after, planned, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow
CALIB = "brown-n4-l64-s0"
OWL = {"allocation": "owl", "owl_m": 3, "owl_lambda": 0.1}


def owl_config(model_dir):
    config = tiny_config(model_dir)
    config["studies"] = {
        "owl": {"criteria": ["wanda"], "patterns": [0.6], "stream": "sequential", **OWL, "allocation": ["uniform", "owl"]},
        "owl_dense": {"criteria": ["magnitude", "sparsegpt"], "patterns": [0.6], "stream": "dense", **OWL},
        "sensitivity": {"kind": "sensitivity", "criteria": ["wanda"], "patterns": [0.6], "windows": 2},
    }
    return config


@pytest.fixture(scope="module")
def owl_run(tmp_path_factory, tiny_model_dir):
    workdir = tmp_path_factory.mktemp("owl_workflow")
    config = owl_config(tiny_model_dir)
    write_config(workdir, config)
    snakemake(workdir)
    return workdir, config


def _sparsity(workdir, variant):
    return json.loads((workdir / "results/tiny" / variant / "sparsity.json").read_text())


def test_owl_variants_hold_their_allocation_block_by_block(owl_run):
    workdir, _ = owl_run
    allocation = json.loads((workdir / f"results/tiny/allocation/{CALIB}/owl-m3-l0.1-u0.6/allocation.json").read_text())
    per_block = allocation["block_sparsities"]
    assert sorted(per_block) == pytest.approx([0.5, 0.7])  # two blocks: mean 0.6, spread 2 lambda
    for variant in ("wanda-u0.6-owl-m3-l0.1-seq", "magnitude-u0.6-owl-m3-l0.1", "sparsegpt-u0.6-owl-m3-l0.1-dense"):
        record = _sparsity(workdir, f"pruned/{CALIB}/{variant}")
        assert record["requested_per_block"] == per_block
        assert [b["sparsity"] for b in record["per_block"]] == pytest.approx(per_block, abs=1 / 64), variant
        assert record["overall"] == pytest.approx(0.6, abs=1 / 64)
    uniform = _sparsity(workdir, f"pruned/{CALIB}/wanda-u0.6-seq")
    assert "requested_per_block" not in uniform and [b["sparsity"] for b in uniform["per_block"]] == pytest.approx([0.6, 0.6], abs=1 / 64)
    assert read_record(workdir / f"results/tiny/pruned/{CALIB}/magnitude-u0.6-owl-m3-l0.1")["values"] == []  # masks only


def test_tables_and_figures_spell_the_allocation(owl_run):
    workdir, _ = owl_run
    owl = pd.read_csv(workdir / "results/tables/owl.csv")
    assert list(owl.allocation) == ["-", "uniform", "owl-m3-l0.1"]
    assert (owl.measured_sparsity[1:] - 0.6).abs().max() < 1 / 64
    dense = pd.read_csv(workdir / "results/tables/owl_dense.csv")
    assert list(dense.method) == ["dense", "magnitude", "sparsegpt"] and list(dense.allocation[1:]) == ["owl-m3-l0.1"] * 2
    # an OWL variant's cost includes the activation cache and the allocation
    bench = workdir / "results/benchmarks/tiny"
    seconds = [float((bench / p).read_text().splitlines()[1].split("\t")[0])
               for p in (f"acts/{CALIB}.tsv", f"allocation/{CALIB}/owl-m3-l0.1-u0.6.tsv", f"pruned/{CALIB}/magnitude-u0.6-owl-m3-l0.1.tsv")]
    assert dense.prune_s[1] == pytest.approx(sum(seconds), abs=0.01)
    for study in ("owl", "owl_dense"):
        assert (workdir / f"results/figures/blocks/{study}.png").stat().st_size > 5000
    assert not (workdir / "results/figures/blocks/sensitivity.png").exists()
    sensitivity = pd.read_csv(workdir / "results/tables/sensitivity.csv")
    assert list(sensitivity.block) == [0, 1] and (sensitivity.perplexity > 1).all() and (sensitivity.windows == 2).all()
    assert (workdir / "results/figures/sensitivity.png").stat().st_size > 5000


def test_nothing_left_to_do_and_a_changed_lambda_reruns_allocation_masks_and_below_only(owl_run):
    workdir, config = owl_run
    assert planned(workdir)[0] == {}
    rules, _ = plan_after(workdir, config, lambda c: c["studies"]["owl"].update(owl_lambda=0.05))
    # not calibration, not the activation cache, not the uniform variant
    assert rules == {"allocation": 1, "prune_sequential": 1, "perplexity": 1, "study_report": 1, "block_sparsity_figure": 1, "claims": 1}
    rules, _ = plan_after(workdir, config, lambda c: c["studies"]["owl_dense"].update(owl_lambda=0.05))
    assert rules == {"allocation": 1, "prune_by_score": 1, "prune_from_cache": 1, "perplexity": 2, "study_report": 1,
                     "block_sparsity_figure": 1, "claims": 1}
    # M too: the allocation and below, never the statistics the allocation is computed from
    rules, _ = plan_after(workdir, config, lambda c: c["studies"]["owl"].update(owl_m=5))
    assert rules == {"allocation": 1, "prune_sequential": 1, "perplexity": 1, "study_report": 1, "block_sparsity_figure": 1, "claims": 1}
    assert not {"model", "corpus", "calibration", "activation_cache"} & set(rules)
