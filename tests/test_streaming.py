"""Streamed (a stored variant read block by block, written as each block is released) equals whole-model in
memory: pruning, reconstruction, retraining and perplexity on the tiny model; retraining a bfloat16 model
keeps it in bfloat16 with float32 masters. (Zero-shot: tests/test_zeroshot.py, dispatched to disk.)"""

import copy
from pathlib import Path

import pytest
import torch

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.mask_files import save_masks
from pruneflow.core.stream import load_variant, load_variant_with_masks, open_stream
from pruneflow.core.tiny import build_tiny_model
from pruneflow.core.writer import VariantWriter, write_full_variant
from pruneflow.evaluate.perplexity import perplexity
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.recover.run import recover
from pruneflow.spec.naming import parse_recovery

CALIB = torch.randint(2, 258, (4, 32), generator=torch.Generator().manual_seed(0))
WINDOWS = torch.randint(2, 258, (3, 24), generator=torch.Generator().manual_seed(1))
SETTINGS = {"lr": 1e-3, "steps": 3, "batch_size": 2}


def _store(model, tok, folder):
    with artifact_folder(folder) as out:
        write_full_variant(out, model, tok, {})
    return folder


def _same_parameters(a, b):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name


def _prune_streamed(dense_dir, final, criterion="sparsegpt"):
    stream = open_stream(dense_dir, tokenizer=False)
    with artifact_folder(final) as out:
        stream.sink = writer = VariantWriter(out, stream, Path(final))
        for index, masks in prune_model(stream, get_criterion(criterion), parse_pattern("2:4"), CALIB, "sequential", 2):
            save_masks(out / "masks", index, masks)
        writer.finish(stream.model, {}, requested=0.5)
    return final


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    model, tok = build_tiny_model()
    dense_dir = _store(model, tok, root / "dense")
    return root, dense_dir, _prune_streamed(dense_dir, root / "pruned")


def test_pruning_streamed_equals_in_memory(stored):
    _, dense_dir, pruned_dir = stored
    model, _ = load_variant(dense_dir)
    masks = dict(prune_model(model, get_criterion("sparsegpt"), parse_pattern("2:4"), CALIB, "sequential", 2))
    rebuilt, _, saved = load_variant_with_masks(pruned_dir)
    _same_parameters(rebuilt, model)
    assert all(torch.equal(saved[i][n], m) for i in masks for n, m in masks[i].items())


def test_perplexity_streamed_equals_the_whole_model_forward(stored):
    _, _, pruned_dir = stored
    model, _ = load_variant(pruned_dir)
    with torch.no_grad():
        logits = model(WINDOWS).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), WINDOWS[:, 1:].reshape(-1))
    for store in ("device", "cpu"):
        result = perplexity(open_stream(pruned_dir), WINDOWS, batch_size=2, store=store)
        assert result["perplexity"] == pytest.approx(float(nll.exp()), rel=1e-5)


@pytest.mark.parametrize("spec", ["recon:sublayer", "retrain:norms+masklora"])
def test_recovery_streamed_equals_in_memory(stored, spec):
    root, dense_dir, pruned_dir = stored
    recovery = parse_recovery(spec)
    whole = recovery.mode == "retrain"
    dense = None if whole else open_stream(dense_dir, tokenizer=False)
    work = open_stream(pruned_dir, tokenizer=False, skeleton_of=dense)
    final = root / spec.replace(":", "-").replace("+", "_")
    with artifact_folder(final) as out:
        work.sink = writer = VariantWriter(out, work, final)
        recover(dense, work, work.keep_masks, CALIB, recovery, SETTINGS)
        writer.finish(work.model, {})
    streamed, _ = load_variant(final)

    model, _, masks = load_variant_with_masks(pruned_dir)
    recover(None if whole else load_variant(dense_dir)[0], model, masks, CALIB, recovery, SETTINGS)
    _same_parameters(streamed, model)


def test_retraining_a_bfloat16_model_keeps_it_bfloat16_and_its_masks(tmp_path):
    model, tok = build_tiny_model()
    dense_dir = _store(model.to(torch.bfloat16), tok, tmp_path / "dense")
    pruned_dir = _prune_streamed(dense_dir, tmp_path / "pruned", "wanda")
    work = open_stream(pruned_dir, tokenizer=False)
    final = tmp_path / "retrained"
    with artifact_folder(final) as out:
        work.sink = writer = VariantWriter(out, work, final)
        result = recover(None, work, work.keep_masks, CALIB, parse_recovery("retrain:norms+masklora"),
                         {**SETTINGS, "steps": 6, "lr": 1e-2}, gradient_checkpointing=True)
        writer.finish(work.model, {}, requested=0.5)
    assert result["losses"][-1] < result["losses"][0]
    before, _ = load_variant(pruned_dir)
    after, _, masks = load_variant_with_masks(final)
    assert {p.dtype for p in after.parameters()} == {torch.bfloat16}
    changed = [n for (n, a), (_, b) in zip(after.named_parameters(), before.named_parameters()) if not torch.equal(a, b)]
    assert any("norm" in n for n in changed) and any("proj" in n for n in changed)  # norms and merged adapters trained
    for i, block in enumerate(after.model.layers):
        for name, keep in masks[i].items():
            assert (block.get_submodule(name).weight[~keep] == 0).all()


def test_gradient_checkpointing_gives_the_same_retraining():
    model, _ = build_tiny_model()
    plain, checked = copy.deepcopy(model), copy.deepcopy(model)
    recover(None, plain, None, CALIB, parse_recovery("retrain:norms"), SETTINGS)
    recover(None, checked, None, CALIB, parse_recovery("retrain:norms"), SETTINGS, gradient_checkpointing=True)
    for (name, a), (_, b) in zip(plain.named_parameters(), checked.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_released_block_frees_its_weights_though_the_loop_still_names_it(stored):
    _, dense_dir, _ = stored
    stream = open_stream(dense_dir, tokenizer=False)
    held = [block for _, block in stream.blocks()]  # every block kept by name past its release
    assert len(held) == stream.num_blocks
    assert all(p.is_meta for block in held for p in block.parameters())
    with stream.loaded(0) as again:  # a released block can still be read afresh
        assert not any(p.is_meta for p in again.parameters())
