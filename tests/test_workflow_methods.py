"""DSnoT, ALPS and AlphaPruning through the workflow on a tiny model (one run): each variant's exact sparsity as its
pattern and allocation say, the refinement on both streams (the dense one from the cache's channel sums), the rows
and labels of their tables."""

import json

import pandas as pd
import pytest
import torch

from pruneflow.core.artifacts import load_tensors
from pruneflow.core.mask_files import load_masks
from pruneflow.core.variants import read_record
from workflow_helpers import snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow
CALIB = "brown-n4-l64-s0"
STUDIES = {
    "dsnot": {"criteria": ["wanda"], "patterns": [0.7, "2:4"], "stream": "sequential", "refinements": ["none", "dsnot"]},
    "dsnot_dense": {"criteria": ["wanda"], "patterns": [0.7], "stream": "dense", "refinements": ["none", "dsnot"]},
    "alps": {"criteria": ["sparsegpt", "alps"], "patterns": [0.5, "2:4"], "stream": "sequential"},
    "alps_dense": {"criteria": ["alps"], "patterns": [0.5, "2:4"], "stream": "dense"},
    "alphapruning": {"criteria": ["wanda"], "patterns": [0.7], "stream": "sequential", "allocation": ["uniform", "alphapruning"]},
}


@pytest.fixture(scope="module")
def methods_run(tmp_path_factory, tiny_model_dir):
    workdir = tmp_path_factory.mktemp("methods_workflow")
    config = tiny_config(tiny_model_dir)
    config["studies"] = STUDIES
    write_config(workdir, config)
    snakemake(workdir)
    return workdir


def _masks(workdir, variant):
    return load_masks(workdir / f"results/tiny/pruned/{CALIB}/{variant}/masks")


def _each_matrix(masks):
    return [(f"{i}.{name}", keep) for i, block in masks.items() for name, keep in block.items()]


def _two_of_four(keep):
    return bool((keep.reshape(keep.shape[0], -1, 4).sum(-1) == 2).all())


def test_dsnot_keeps_each_rows_count_and_every_group_on_both_streams(methods_run):
    for plain, refined in [("wanda-u0.7-seq", "wanda-u0.7-dsnot-seq"), ("wanda-2of4-seq", "wanda-2of4-dsnot-seq"),
                           ("wanda-u0.7-dense", "wanda-u0.7-dsnot-dense")]:
        before, after = _masks(methods_run, plain), _masks(methods_run, refined)
        changed = 0
        for (name, keep), (_, kept_before) in zip(_each_matrix(after), _each_matrix(before)):
            assert torch.equal(keep.sum(1), kept_before.sum(1)), (refined, name)  # the same count in every row
            if "2of4" in refined:
                assert _two_of_four(keep), (refined, name)
            else:
                assert (keep.shape[1] - keep.sum(1) == int(keep.shape[1] * 0.7)).all(), (refined, name)
            changed += int((keep != kept_before).sum())
        assert changed > 0, refined  # prune-and-grow moved weights (from the cache's channel sums on the dense stream)


def test_the_cache_stores_channel_sums_because_a_dense_study_reads_channel_means(methods_run):
    tensors, meta = load_tensors(methods_run / f"results/tiny/acts/{CALIB}/block000.safetensors")
    assert int(meta["samples"]) == 4 and int(meta["count"]) == 4 * 64
    assert tensors["mlp.down_proj.sum"].dtype == torch.float64 and tensors["mlp.down_proj.sum"].shape == tensors["mlp.down_proj.sq_sum"].shape


def test_alps_prunes_exactly_per_matrix_or_group_and_stores_updated_values(methods_run):
    for variant in ("alps-u0.5-seq", "alps-2of4-seq", "alps-u0.5-dense", "alps-2of4-dense"):
        for name, keep in _each_matrix(_masks(methods_run, variant)):
            if "2of4" in variant:
                assert _two_of_four(keep), (variant, name)
            else:  # one top-k over the whole matrix, as the reference
                assert keep.numel() - int(keep.sum()) == int(keep.numel() * 0.5), (variant, name)
        assert read_record(methods_run / f"results/tiny/pruned/{CALIB}/{variant}")["values"], variant  # kept weights updated


def test_alphapruning_prunes_each_block_at_its_allocated_sparsity(methods_run):
    allocation = json.loads((methods_run / "results/tiny/allocation/none/alphapruning-e0.3-u0.7/allocation.json").read_text())
    per_block = allocation["block_sparsities"]
    assert sum(per_block) / len(per_block) == pytest.approx(0.7) and per_block[0] != pytest.approx(per_block[1])
    masks = _masks(methods_run, "wanda-u0.7-alphapruning-e0.3-seq")
    for index, block in masks.items():
        for name, keep in block.items():  # Wanda compares within each output row
            assert (keep.shape[1] - keep.sum(1) == int(keep.shape[1] * per_block[index])).all(), (index, name)
    record = json.loads((methods_run / f"results/tiny/pruned/{CALIB}/wanda-u0.7-alphapruning-e0.3-seq/sparsity.json").read_text())
    assert record["requested_per_block"] == per_block


def test_tables_have_a_row_per_variant_labelled_by_refinement_and_allocation(methods_run):
    tables = methods_run / "results/tables"
    dsnot = pd.read_csv(tables / "dsnot.csv")
    assert list(zip(dsnot.refinement, dsnot.pattern.fillna("-").astype(str))) == [
        ("-", "-"), ("none", "0.7"), ("none", "2:4"), ("dsnot", "0.7"), ("dsnot", "2:4")]
    assert list(pd.read_csv(tables / "dsnot_dense.csv").refinement) == ["-", "none", "dsnot"]
    alps = pd.read_csv(tables / "alps.csv")
    assert list(zip(alps.method, alps.pattern.fillna("-"))) == [
        ("dense", "-"), ("sparsegpt", "0.5"), ("sparsegpt", "2:4"), ("alps", "0.5"), ("alps", "2:4")]
    assert list(pd.read_csv(tables / "alps_dense.csv").stream) == ["-", "dense", "dense"]
    assert list(pd.read_csv(tables / "alphapruning.csv").allocation) == ["-", "uniform", "alphapruning-e0.3"]
    for study in STUDIES:
        assert (tables / f"{study}.csv").is_file() and (methods_run / f"results/figures/{study}.png").stat().st_size > 5000
