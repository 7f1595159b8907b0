"""Crashes and determinism: a killed pruning job leaves nothing that looks like a result (and the
rerun removes its temporary), and the same config and seed give bit-identical masks and identical
perplexity."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from pruneflow.core.atomic import save_model
from pruneflow.core.mask_files import load_block_masks
from pruneflow.core.tiny import build_tiny_model
from workflow_helpers import snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow
VARIANT = "results/tiny/pruned/brown-n64-l128-s0/sparsegpt-u0.5-seq"


@pytest.fixture(scope="module")
def slower_model_dir(tmp_path_factory):
    """Big enough that sequential SparseGPT takes a few seconds: there is time to kill it mid-way."""
    folder = tmp_path_factory.mktemp("model8") / "model"
    model, tok = build_tiny_model(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4)
    save_model(model, tok, folder)
    return folder


def _config(model_dir):
    config = tiny_config(model_dir)
    config["calibration"].update(nsamples=64, seqlen=128)
    config["studies"] = {"one": {"criteria": ["sparsegpt"], "patterns": [0.5], "stream": "sequential"}}
    return config


def _masks(workdir):
    folder = workdir / VARIANT / "masks"
    return {p.name: load_block_masks(p) for p in sorted(folder.glob("block*.safetensors"))}


def test_killed_job_leaves_no_result_and_rerun_matches(tmp_path, slower_model_dir):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for d in (reference, crashed):
        d.mkdir()
        write_config(d, _config(slower_model_dir))
    snakemake(reference, VARIANT)

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(crashed),
           "--configfile", str(crashed / "config.yaml"), "--replace-workflow-config", "--cores", "1", VARIANT]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parent = crashed / VARIANT
    deadline = time.time() + 300
    # Wait until the job has written its first block's masks into its temporary folder, then kill it all.
    while not list(parent.parent.glob(f".{parent.name}.*.tmp/{parent.name}/masks/block000.safetensors")):
        assert proc.poll() is None and time.time() < deadline, "the pruning job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not parent.exists()  # nothing a rerun could mistake for a result
    assert list(parent.parent.glob(f".{parent.name}.*.tmp"))  # the killed job's partial work, under a temporary name

    snakemake(crashed, "--unlock")  # Snakemake itself was killed too, as on a node crash: release its lock
    snakemake(crashed, VARIANT)  # reruns the job (--rerun-incomplete in the default profile)
    assert not list((crashed / "results").rglob("*.tmp"))  # the killed job's temporary is gone
    got, want = _masks(crashed), _masks(reference)
    assert got.keys() == want.keys() and len(want) == 8
    assert all(torch.equal(got[f][n], want[f][n]) for f in want for n in want[f])


def test_two_runs_give_identical_masks_and_perplexity(tmp_path, tiny_model_dir):
    runs = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        config = tiny_config(tiny_model_dir)
        config["studies"] = {"s": {"criteria": ["wanda", "sparsegpt"], "patterns": ["2:4"], "stream": "sequential"}}
        write_config(workdir, config)
        snakemake(workdir)
        runs.append(workdir)
    for method in ("wanda-2of4-seq", "sparsegpt-2of4-seq"):
        folder = f"results/tiny/pruned/brown-n4-l64-s0/{method}"
        for path in sorted((runs[0] / folder / "masks").glob("*.safetensors")):
            a, b = load_block_masks(path), load_block_masks(runs[1] / folder / "masks" / path.name)
            assert all(torch.equal(a[k], b[k]) for k in a)
        ppl = [json.loads((r / f"results/tiny/eval/pruned/brown-n4-l64-s0/{method}/ppl-wiki-l64-w4-bosauto.json").read_text())
               for r in runs]
        assert ppl[0]["perplexity"] == ppl[1]["perplexity"]
