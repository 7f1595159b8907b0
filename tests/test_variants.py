"""Compact variants: parent + masks + what changed, rebuilt bit for bit; bad parents and parts fail clearly."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from pruneflow.core.artifacts import ArtifactError, artifact_folder, manifest_digest
from pruneflow.core.mask_files import save_masks
from pruneflow.core.stream import load_variant, load_variant_with_masks
from pruneflow.core.tiny import build_tiny_model
from pruneflow.core.variants import VariantError, read_record
from pruneflow.core.writer import export_variant, write_full_variant, write_masked_variant, write_variant
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.dense_stream import apply_masks
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model

IDS = torch.randint(2, 258, (2, 24), generator=torch.Generator().manual_seed(3))


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def _same(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[n], pb[n]) for n in pa) and torch.equal(_logits(a), _logits(b))


@pytest.fixture()
def dense_dir(tmp_path):
    model, tok = build_tiny_model()
    folder = tmp_path / "results/tiny/dense"
    with artifact_folder(folder) as out:
        write_full_variant(out, model, tok, {"variant": "dense"})
    return folder


def _pruned(dense_dir, criterion, pattern="2:4", calib=None):
    """Prune a fresh copy of the dense model sequentially, writing masks as the loop goes, and store it."""
    model, tok = load_variant(dense_dir)
    final = dense_dir.parent / f"pruned/c/{criterion}"
    calib = torch.randint(2, 258, (4, 32), generator=torch.Generator().manual_seed(0)) if calib is None else calib
    with artifact_folder(final) as out:
        for i, masks in prune_model(model, get_criterion(criterion), parse_pattern(pattern), calib, "sequential", 2):
            save_masks(out / "masks", i, masks)
        write_variant(out, model, tok, dense_dir, final, {"criterion": criterion}, requested=0.5)
    return final, model


def test_wanda_variant_stores_masks_only_and_rebuilds_bit_for_bit(dense_dir):
    final, model = _pruned(dense_dir, "wanda")
    record = read_record(final)
    assert record["kind"] == "compact" and record["values"] == [] and record["params"] == [] and record["parent"] == "../../../dense"
    assert not (final / "values").exists() and not (final / "params.safetensors").exists()
    rebuilt, _ = load_variant(final)
    assert _same(rebuilt, model)
    sparsity = json.loads((final / "sparsity.json").read_text())
    assert sparsity["overall"] == pytest.approx(0.5, abs=1e-3) and sparsity["masked_weights_checked"] > 0


def test_sparsegpt_variant_stores_kept_values_in_the_model_dtype(dense_dir):
    final, model = _pruned(dense_dir, "sparsegpt")
    record = read_record(final)
    assert record["values"] == [0, 1] and record["params"] == []
    rebuilt, _ = load_variant(final)
    assert _same(rebuilt, model)
    hidden, inter = 64, 128
    prunable = 2 * (2 * hidden * hidden + 2 * hidden * 32 + 3 * hidden * inter)  # q,o + k,v (2 KV heads) + mlp
    values = sum(p.stat().st_size for p in (final / "values").iterdir())
    assert prunable * 0.5 * 4 <= values < prunable * 0.5 * 4 + 8192  # half the weights, float32, plus headers


def test_recovered_variant_inherits_masks_and_stores_changed_matrices_and_norms(dense_dir):
    parent, _ = _pruned(dense_dir, "wanda")
    model, tok, masks = load_variant_with_masks(parent)
    with torch.no_grad():  # a "recovery": one matrix's kept weights and one norm change
        layer = model.model.layers[1].mlp.down_proj
        layer.weight.mul_(1.5)
        model.model.layers[0].input_layernorm.weight.add_(0.25)
    final = dense_dir.parent / "recovered/c/wanda/c/recon"
    with artifact_folder(final) as out:
        write_variant(out, model, tok, parent, final, {"recovery": "recon"})
    record = read_record(final)
    assert record["masks"] == "inherited" and record["values"] == [1]
    assert record["params"] == ["model.layers.0.input_layernorm.weight"]
    rebuilt, _, rebuilt_masks = load_variant_with_masks(final)
    assert _same(rebuilt, model)
    assert all(torch.equal(rebuilt_masks[i][n], masks[i][n]) for i in masks for n in masks[i])


def test_recovery_that_loses_sparsity_cannot_be_written(dense_dir):
    parent, _ = _pruned(dense_dir, "magnitude")
    model, tok = load_variant(parent)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.add_(1.0)  # every pruned weight becomes nonzero
    final = dense_dir.parent / "recovered/bad"
    with pytest.raises(Exception, match=r"0\.self_attn\.q_proj: \d+ pruned weights are no longer zero"):
        with artifact_folder(final) as out:
            write_variant(out, model, tok, parent, final, {})
    assert not final.exists()


def test_masked_variant_from_an_unchanged_parent_equals_applying_the_masks(dense_dir):
    model, _ = load_variant(dense_dir)
    reference, _ = load_variant(dense_dir)
    masks = dict(prune_model(reference, get_criterion("magnitude"), parse_pattern(0.5)))
    final = dense_dir.parent / "pruned/none/magnitude-u0.5"
    with artifact_folder(final) as out:
        for i, m in masks.items():
            save_masks(out / "masks", i, m)
        write_masked_variant(out, model, dense_dir, final, {}, requested=0.5)
    rebuilt, _ = load_variant(final)
    apply_masks(model, masks)
    assert _same(rebuilt, model) and _same(rebuilt, reference)
    assert json.loads((final / "sparsity.json").read_text())["overall"] == pytest.approx(0.5)


def test_export_loads_without_pruneflow_with_identical_logits(dense_dir, tmp_path):
    final, _ = _pruned(dense_dir, "sparsegpt")
    export_variant(final, tmp_path / "export")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "export")  # transformers alone
    rebuilt, _ = load_variant(final)
    assert torch.equal(_logits(plain.eval()), _logits(rebuilt))


def test_missing_parent_names_both_folders(dense_dir):
    final, _ = _pruned(dense_dir, "wanda")
    shutil.rmtree(dense_dir)
    with pytest.raises(VariantError, match=rf"{final} is stored as changes to {dense_dir}, which is missing"):
        load_variant(final)


def test_changed_parent_names_both_folders(dense_dir):
    final, _ = _pruned(dense_dir, "wanda")
    model, tok = build_tiny_model(seed=1)
    with artifact_folder(dense_dir) as out:  # the dense model replaced by another one
        write_full_variant(out, model, tok, {})
    with pytest.raises(VariantError, match=rf"{final} was made from another {dense_dir}"):
        load_variant(final)


def test_parts_that_do_not_fit_the_parent_fail_naming_the_file(dense_dir):
    final, _ = _pruned(dense_dir, "sparsegpt")
    model, tok = build_tiny_model(intermediate_size=96)  # the same names, other shapes
    with artifact_folder(dense_dir) as out:
        write_full_variant(out, model, tok, {})
    with artifact_folder(final.parent / "again") as out:  # the same parts, recorded against the new parent
        shutil.copytree(final / "masks", out / "masks")
        shutil.copytree(final / "values", out / "values")
        record = {**read_record(final), "parent_manifest": manifest_digest(dense_dir)}
        (out / "variant.json").write_text(json.dumps(record))
    pattern = rf"{final.parent / 'again/masks/block000.safetensors'}: mask '[a-z_.]+' of shape .* does not fit .* in {dense_dir}"
    with pytest.raises(VariantError, match=pattern):
        load_variant(final.parent / "again")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_part_fails_with_its_path_and_the_fix(dense_dir, damage):
    final, _ = _pruned(dense_dir, "sparsegpt")
    part = final / "values/block001.safetensors"
    data = part.read_bytes()
    if damage == "truncate":
        part.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        part.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    else:
        part.unlink()
    with pytest.raises(ArtifactError, match=rf"{part}: .*delete {final} and rerun"):
        load_variant(final)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transposed_weights_and_bfloat16_round_trip(tmp_path, dtype):
    """GPT-2 stores its matrices as [in, out] (Conv1D): masks and values follow the adapter's [out, in] view."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from pruneflow.core.tiny import byte_tokenizer

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=258)).to(dtype).eval()
    tok = byte_tokenizer()
    dense = tmp_path / "dense"
    with artifact_folder(dense) as out:
        write_full_variant(out, model, tok, {})
    calib = torch.randint(2, 258, (4, 16), generator=torch.Generator().manual_seed(0))
    final = tmp_path / "pruned"
    with artifact_folder(final) as out:
        for i, masks in prune_model(model, get_criterion("sparsegpt"), parse_pattern(0.5), calib, "sequential", 2):
            save_masks(out / "masks", i, masks)
        write_variant(out, model, tok, dense, final, {}, requested=0.5)
    assert read_record(final)["values"] == [0, 1] and read_record(final)["dtype"] == str(dtype).removeprefix("torch.")
    rebuilt, _ = load_variant(final)
    assert _same(rebuilt, model)


def test_a_variant_whose_config_differs_from_its_parent_records_its_config_and_new_parameters(dense_dir):
    parent, _ = _pruned(dense_dir, "wanda")
    model, tok, masks = load_variant_with_masks(parent)
    with torch.no_grad():  # a LoRA merged into a tied head unties it: a new parameter, another config
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.clone() * 1.01)
    final = dense_dir.parent / "recovered/untied"
    with artifact_folder(final) as out:
        write_variant(out, model, tok, parent, final, {})
    record = read_record(final)
    assert record["kind"] == "compact" and record["config"]["tie_word_embeddings"] is False
    assert record["params"] == ["lm_head.weight"] and not (final / "model").exists()  # the head alone, no second model
    rebuilt, _, rebuilt_masks = load_variant_with_masks(final)
    assert rebuilt.lm_head.weight is not rebuilt.get_input_embeddings().weight
    assert _same(rebuilt, model)
    assert all(torch.equal(rebuilt_masks[i][n], masks[i][n]) for i in masks for n in masks[i])  # kept for the checks


@pytest.mark.parametrize("reconstruction", ["none", "liar"])
def test_structured_variant_stores_kept_indices_and_repaired_projections(dense_dir, reconstruction):
    """Heads and neurons removed: stored as the dense model's blocks sliced, plus the projections LIAR
    repaired (and the biases it added); rebuilt bit for bit as a physically smaller model."""
    from pruneflow.core.artifacts import load_tensors
    from pruneflow.core.writer import stored_bytes, write_structured_variant
    from pruneflow.structured.prune import count_parameters, prune_structured

    model, tok = load_variant(dense_dir)
    selections = {}
    calib = torch.randint(2, 258, (4, 32), generator=torch.Generator().manual_seed(0))
    prune_structured(model, calib, "both", 0.5, "fluctuation", reconstruction, 0.1, 2, selections=selections)
    final = dense_dir.parent / f"structured/c/{reconstruction}"
    with artifact_folder(final) as out:
        write_structured_variant(out, model, tok, dense_dir, final, {}, selections)
    record = read_record(final)
    assert record["kind"] == "structured" and not (final / "model").exists()
    stored = load_tensors(final / "values" / "block000.safetensors")[0] if record["values"] else {}
    if reconstruction == "none":  # every tensor is a slice of the dense model's
        assert record["values"] == [] and record["params"] == []
    else:  # the repaired output projections, the biases added, and the zero biases the config flag adds
        assert {"self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias"} <= set(stored)
        assert "self_attn.q_proj.weight" not in stored
    assert stored_bytes(final) < stored_bytes(dense_dir) / 3
    loaded, _ = load_variant(final)
    assert count_parameters(loaded) == count_parameters(model) < count_parameters(build_tiny_model()[0])
    assert loaded.config.num_attention_heads == model.config.num_attention_heads == 2
    assert _same(loaded, model)


def test_structured_variant_with_a_changed_parent_fails_naming_both(dense_dir):
    from pruneflow.core.writer import write_structured_variant
    from pruneflow.structured.prune import prune_structured

    model, tok = load_variant(dense_dir)
    selections = {}
    prune_structured(model, None, "neurons", 0.5, "magnitude", "none", selections=selections)
    final = dense_dir.parent / "structured/none/magnitude"
    with artifact_folder(final) as out:
        write_structured_variant(out, model, tok, dense_dir, final, {}, selections)
    other, tok = build_tiny_model(seed=1)
    with artifact_folder(dense_dir) as out:
        write_full_variant(out, other, tok, {"variant": "dense"})
    with pytest.raises(VariantError, match=f"{final}.*another {dense_dir}"):
        load_variant(final)


def test_interleaved_recovery_streamed_writes_its_own_masks(dense_dir):
    """The writer gets each block's masks as the interleaved recovery chooses them (not after the job)."""
    from pathlib import Path

    from pruneflow.core.stream import open_stream
    from pruneflow.core.writer import VariantWriter
    from pruneflow.recover.run import recover
    from pruneflow.spec.naming import make_method, parse_recovery

    calib = torch.randint(2, 258, (4, 32), generator=torch.Generator().manual_seed(0))
    dense = open_stream(dense_dir, tokenizer=False)
    work = open_stream(dense_dir, tokenizer=False, skeleton_of=dense)
    final, masks = dense_dir.parent / "recovered/interleaved", {}
    with artifact_folder(final) as out:
        work.sink = writer = VariantWriter(out, work, Path(final), masks=masks)
        recover(dense, work, masks, calib, parse_recovery("recon:sublayer:dense:interleaved"), {"lr": 1e-3, "steps": 2},
                method=make_method("wanda", 0.5))
        writer.finish(work.model, {"variant": "interleaved"}, requested=0.5)
    assert read_record(final)["masks"] == "own" and sorted(masks) == [0, 1]
    sparsity = json.loads((final / "sparsity.json").read_text())
    assert sparsity["overall"] == pytest.approx(0.5, abs=1e-3) and sparsity["masked_weights_checked"] > 0
    _, _, saved = load_variant_with_masks(final)
    for i, block_masks in masks.items():
        assert all(torch.equal(saved[i][n], m) for n, m in block_masks.items())


def test_structured_prune_streamed_stores_slices_not_the_kept_weights(dense_dir):
    """Streamed, the writer sees each block's kept indices as the job chooses them: only repaired tensors are values."""
    from pathlib import Path

    from safetensors import safe_open

    from pruneflow.core.stream import open_stream
    from pruneflow.core.writer import VariantWriter
    from pruneflow.structured.prune import prune_structured

    calib = torch.randint(2, 258, (4, 32), generator=torch.Generator().manual_seed(0))
    stream, selections, final = open_stream(dense_dir, tokenizer=False), {}, dense_dir.parent / "structured/liar"
    with artifact_folder(final) as out:
        stream.sink = writer = VariantWriter(out, stream, Path(final), kind="structured", selections=selections)
        prune_structured(stream, calib, "neurons", 0.25, "fluctuation", "liar", 0.1, 2, selections=selections)
        writer.finish(stream.model, {})
    assert read_record(final)["slices"] == [0, 1]
    with safe_open(final / "values/block000.safetensors", "pt") as values:
        assert not any("gate_proj.weight" in n or "up_proj.weight" in n for n in values.keys())
    whole, _ = load_variant(final)
    assert whole.config.intermediate_size == 96
