"""Structured pruning (heads as whole KV groups, FFN neurons) with none / bias / LIAR reconstruction."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from pruneflow.core.activations import capture_block_inputs, run_block
from pruneflow.core.architectures import architecture_of, attention_shape
from pruneflow.core.tiny import build_tiny_model
from pruneflow.evaluate.speed import tokens_per_second
from pruneflow.structured.liar import (
    ChannelStats,
    affine_fit,
    choose_damping,
    collect_channel_stats,
    collect_split_channel_stats,
    holdout_samples,
    output_error,
)
from pruneflow.structured.prune import (
    count_parameters,
    kept_units,
    prune_structured,
    remove_units,
    unit_scores,
    units_of,
    units_to_remove,
)

torch.set_num_threads(1)


def _ids(n=8, seqlen=64, seed=1):
    return torch.randint(2, 258, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _block_error(model, block_index, edit):
    """Max |Δ output| of block ``block_index`` on fresh inputs after ``edit(block, stats_inputs)``."""
    arch = architecture_of(model)
    block = arch.get_blocks(model)[block_index]
    calib = capture_block_inputs(model, _ids(seed=1), batch_size=4)
    test = capture_block_inputs(model, _ids(n=4, seed=2), batch_size=4)
    dense = torch.cat(run_block(block, test))
    pruned = copy.deepcopy(block)
    edit(pruned, calib)
    return (torch.cat(run_block(pruned, test)) - dense).abs().max().item()


# ---------------------------------------------------------------------------------------------
# (a) LIAR is exact when the removed channels are affine functions of the kept ones


def _model_with_dependent_neurons():
    """Tiny LLaMA with MLP biases whose layer-0 neurons 10, 20, 30 are affine in the others:
    h10 = 2·h3 (duplicated gate, doubled up), h20 = 0.5·h5 − 1.5·h7 (shared gate, combined up),
    h30 = silu(1)·0.7 (a constant)."""
    base, _ = build_tiny_model()
    config = copy.deepcopy(base.config)
    config.mlp_bias = True
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    mlp = model.model.layers[0].mlp
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            layer.bias.copy_(0.3 * torch.randn(layer.bias.shape, generator=g))
        gate, up = mlp.gate_proj, mlp.up_proj
        for p in (gate.weight, gate.bias):
            p[10] = p[3]
            p[7] = p[5]
            p[20] = p[5]
        for p in (up.weight, up.bias):
            p[10] = 2 * p[3]
            p[20] = 0.5 * p[5] - 1.5 * p[7]
        gate.weight[30] = 0
        up.weight[30] = 0
        gate.bias[30] = 1.0
        up.bias[30] = 0.7
    return model


def _remove_explicit(model, kind, removed, reconstruction):
    """An edit for :func:`_block_error`: remove the ``removed`` units with zero damping."""

    def edit(block, calib):
        sub = units_of(architecture_of(model), block, kind, attention_shape(model))
        stats = collect_channel_stats(block, sub.out_layer, calib, gram=True)
        keep = torch.tensor([u for u in range(sub.units) if u not in removed])
        remove_units(sub, keep, reconstruction, stats, damping=0.0)

    return edit


def test_liar_exact_for_dependent_neurons_bias_compensation_is_not():
    model = _model_with_dependent_neurons()
    errors = {r: _block_error(model, 0, _remove_explicit(model, "neurons", {10, 20, 30}, r)) for r in ("none", "bias", "liar")}
    assert errors["none"] > 1e-3
    assert errors["liar"] < 1e-4 * errors["none"]
    assert errors["bias"] > 0.1 * errors["none"]


def test_bias_compensation_exact_for_constant_neuron_only():
    model = _model_with_dependent_neurons()
    errors = {r: _block_error(model, 0, _remove_explicit(model, "neurons", {30}, r)) for r in ("none", "bias")}
    assert errors["none"] > 1e-3
    assert errors["bias"] < 1e-5 * errors["none"]


def test_liar_exact_for_duplicated_kv_group_bias_compensation_is_not():
    model, _ = build_tiny_model()  # 4 query heads, 2 KV groups, head_dim 16, no biases
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight[32:64] = attn.q_proj.weight[0:32]
        attn.k_proj.weight[16:32] = attn.k_proj.weight[0:16]
        attn.v_proj.weight[16:32] = attn.v_proj.weight[0:16]
    errors = {r: _block_error(model, 0, _remove_explicit(model, "heads", {1}, r)) for r in ("none", "bias", "liar")}
    assert errors["none"] > 1e-3
    assert errors["liar"] < 1e-4 * errors["none"]
    assert errors["bias"] > 0.1 * errors["none"]


def test_weight_only_liar_exact_for_linear_dependence_and_adds_no_bias():
    """h10 = 2·h3 is linear (no intercept): the weight-only fit reproduces the block; a duplicated KV
    group likewise, and the bias-free o_proj stays bias-free (so bias-free families can use it)."""
    model = _model_with_dependent_neurons()
    errors = {r: _block_error(model, 0, _remove_explicit(model, "neurons", {10}, r)) for r in ("none", "liar_weight")}
    assert errors["liar_weight"] < 1e-4 * errors["none"]
    model, _ = build_tiny_model()
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight[32:64] = attn.q_proj.weight[0:32]
        attn.k_proj.weight[16:32] = attn.k_proj.weight[0:16]
        attn.v_proj.weight[16:32] = attn.v_proj.weight[0:16]
    errors = {r: _block_error(model, 0, _remove_explicit(model, "heads", {1}, r)) for r in ("none", "liar_weight")}
    assert errors["liar_weight"] < 1e-4 * errors["none"]
    summary = prune_structured(model, _ids(), "heads", 0.5, "fluctuation", "liar_weight", damping=0.01, batch_size=4)
    assert model.model.layers[0].self_attn.o_proj.bias is None and not model.config.attention_bias
    assert summary["damping"] == 0.01


def test_combined_stats_equal_stats_over_all_tokens():
    g = torch.Generator().manual_seed(0)
    x = 50 + torch.randn(5, 40, 6, generator=g) * torch.tensor([1e-2, 0.1, 1, 2, 5, 10])
    a, b, both = ChannelStats(6, True), ChannelStats(6, True), ChannelStats(6, True)
    for i, chunk in enumerate(x):
        (a if i < 3 else b).add(chunk)
        both.add(chunk)
    merged = a.combined(b)
    assert merged.count == both.count == 200
    for name in ("mean", "variance", "col_norms", "covariance", "second_moment"):
        torch.testing.assert_close(getattr(merged, name), getattr(both, name), rtol=1e-6, atol=1e-8)  # chunk sums are float32


def test_output_error_from_moments_matches_tokens_and_choice_minimises_it():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 8, generator=g)
    fit_x, held_x = (torch.randn(n, 8, generator=g) @ mix + 0.5 for n in (30, 400))  # few fit tokens: ridge matters
    fit, held = ChannelStats(8, True), ChannelStats(8, True)
    fit.add(fit_x)
    held.add(held_x)
    weight = torch.randn(5, 8, generator=g, dtype=torch.float64)
    keep, removed = torch.tensor([0, 1, 2, 4, 6]), torch.tensor([3, 5, 7])
    for recon in ("bias", "liar", "liar_weight"):
        coef, intercept = affine_fit(recon, fit, keep, removed, 0.1)
        pred = (held_x.double()[:, keep] @ coef if coef is not None else 0) + (intercept if intercept is not None else 0)
        direct = ((held_x.double()[:, removed] - pred) @ weight[:, removed].T).pow(2).sum(1).mean()
        assert output_error(weight[:, removed], coef, intercept, held, keep, removed) == pytest.approx(float(direct), rel=1e-6)
    grid = (0.0001, 0.01, 0.3, 3.0)
    best, errors = choose_damping("liar", weight, keep, fit, held, grid)
    assert set(errors) == set(grid) and errors[best] == min(errors.values())


def test_auto_damping_split_by_sample_not_by_batch():
    assert holdout_samples(32) == 8 and holdout_samples(2) == 1 and holdout_samples(3) == 1
    model, _ = build_tiny_model()
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    sub = units_of(arch, block, "neurons", attention_shape(model))
    splits = []
    for batch in (3, 8):
        fit, held = collect_split_channel_stats(block, sub.out_layer, capture_block_inputs(model, _ids(), batch), 8)
        splits.append((fit.count, held.count, fit.mean, held.covariance))
    assert splits[0][:2] == splits[1][:2] == (6 * 64, 2 * 64)
    torch.testing.assert_close(splits[0][2], splits[1][2])
    torch.testing.assert_close(splits[0][3], splits[1][3])
    results = []
    for batch in (3, 8):
        m, _ = build_tiny_model()
        summary = prune_structured(m, _ids(), "neurons", 0.25, "fluctuation", "liar", damping="auto", batch_size=batch)
        results.append((summary["damping_chosen"], [r["neurons_damping"] for r in summary["layers"]]))
    assert results[0] == results[1] and sum(results[0][0].values()) == len(results[0][1])


def test_channel_stats_match_torch_moments():
    g = torch.Generator().manual_seed(0)
    x = 100 + torch.randn(3, 200, 6, generator=g) * torch.tensor([1e-2, 0.1, 1, 2, 5, 10])
    stats = ChannelStats(6, gram=True)
    for chunk in x:
        stats.add(chunk)
    flat = x.reshape(-1, 6).double()
    torch.testing.assert_close(stats.mean, flat.mean(0))
    torch.testing.assert_close(stats.covariance, torch.cov(flat.T, correction=0), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(stats.variance, flat.var(0, correction=0), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(stats.col_norms, flat.norm(dim=0))


def test_wanda_and_fluctuation_scores_against_reference():
    model, _ = build_tiny_model()
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    sub = units_of(arch, block, "heads", attention_shape(model))
    seen = []
    handle = sub.out_layer.register_forward_pre_hook(lambda _m, a: seen.append(a[0].reshape(-1, a[0].shape[-1])))
    calib = capture_block_inputs(model, _ids(), batch_size=4)
    stats = collect_channel_stats(block, sub.out_layer, calib, gram=False)
    handle.remove()
    x = torch.cat(seen).double()  # [tokens, 64]: two KV groups of 2 heads × 16 channels
    col = sub.out_layer.weight.double().norm(dim=0)
    wanda = (x.norm(dim=0) * sub.out_layer.weight.double().abs().sum(0)).view(2, 32).sum(1)  # FLAP's Wanda-sp: L1
    fluct = (x.var(0, correction=0) * col**2).view(2, 32).sum(1)
    torch.testing.assert_close(unit_scores("wanda", sub, stats), wanda)
    torch.testing.assert_close(unit_scores("fluctuation", sub, stats), fluct, rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------------------------
# (b) export: physically smaller, reloads with the same logits


@pytest.mark.parametrize("reconstruction", ["none", "liar"])
def test_export_reloads_with_identical_logits(tmp_path, reconstruction):
    model, _ = build_tiny_model()
    before = count_parameters(model)
    summary = prune_structured(model, _ids(), "both", 0.5, "fluctuation", reconstruction, damping=0.01, batch_size=4)
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size) == (2, 1, 16, 64)
    assert cfg.attention_bias == cfg.mlp_bias == (reconstruction == "liar")
    assert summary["params_before"] == before
    assert summary["params_after"] == count_parameters(model) < before
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert count_parameters(loaded) == summary["params_after"]
    layer = loaded.model.layers[1]
    assert layer.self_attn.q_proj.weight.shape == (32, 64) and layer.self_attn.o_proj.weight.shape == (64, 32)
    assert layer.mlp.down_proj.weight.shape == (64, 64)
    ids = _ids(n=2, seed=5)
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
    if reconstruction == "liar":
        assert layer.self_attn.q_proj.bias.abs().max() == 0 and layer.self_attn.o_proj.bias.abs().max() > 0


def test_same_result_twice():
    runs = []
    for _ in range(2):
        model, _ = build_tiny_model()
        prune_structured(model, _ids(), "neurons", 0.3, "wanda", "liar", batch_size=4)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


# ---------------------------------------------------------------------------------------------
# (c) kept counts and whole KV groups


def test_units_to_remove_rounds_to_whole_units():
    assert [units_to_remove(3, r) for r in (0.0, 0.1, 0.2, 0.5, 0.6, 0.9)] == [0, 0, 1, 2, 2, 2]
    assert units_to_remove(1536, 0.2) == 307 and units_to_remove(128, 0.2) == 26
    assert kept_units(torch.tensor([3.0, 1.0, 2.0, 1.0]), 0.5).tolist() == [0, 2]  # ties: lower index goes


def test_smollm2_like_gqa_removes_whole_groups():
    """9 query heads in 3 KV groups (as SmolLM2): ratio 0.2 removes one group of 3 query heads."""
    model, _ = build_tiny_model(hidden_size=72, num_attention_heads=9, num_key_value_heads=3, intermediate_size=40)
    dense = copy.deepcopy(model)
    summary = prune_structured(model, None, "both", 0.2, "magnitude", "none")
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.intermediate_size) == (6, 2, 32)
    for index, record in enumerate(summary["layers"]):
        kept = record["kv_groups_kept"]
        assert len(kept) == 2 and record["neurons_kept"] == 32
        q_rows = torch.cat([torch.arange(g * 24, (g + 1) * 24) for g in kept])  # 3 heads × head_dim 8
        kv_rows = torch.cat([torch.arange(g * 8, (g + 1) * 8) for g in kept])
        old, new = dense.model.layers[index].self_attn, model.model.layers[index].self_attn
        assert torch.equal(new.q_proj.weight, old.q_proj.weight[q_rows])
        assert torch.equal(new.k_proj.weight, old.k_proj.weight[kv_rows])
        assert torch.equal(new.v_proj.weight, old.v_proj.weight[kv_rows])
        assert torch.equal(new.o_proj.weight, old.o_proj.weight[:, q_rows])
    # the removed group is the one with the smallest weight norm
    old = dense.model.layers[0].self_attn
    norms = [
        sum(w[rows].pow(2).sum() for w, rows in (
            (old.q_proj.weight, slice(g * 24, (g + 1) * 24)), (old.k_proj.weight, slice(g * 8, (g + 1) * 8)),
            (old.v_proj.weight, slice(g * 8, (g + 1) * 8)), (old.o_proj.weight.T, slice(g * 24, (g + 1) * 24))))
        for g in range(3)
    ]
    removed = ({0, 1, 2} - set(summary["layers"][0]["kv_groups_kept"])).pop()
    assert removed == int(torch.stack(norms).argmin())
    model(_ids(n=1), use_cache=False)  # still runs


# ---------------------------------------------------------------------------------------------
# (d) bad inputs


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(ratio=1.5), ["1.5", "[0, 1)"]),
        (dict(criterion="taylor"), ["'taylor'", "magnitude", "wanda", "fluctuation"]),
        (dict(reconstruction="adam"), ["'adam'", "none", "bias", "liar"]),
        (dict(target="layers"), ["'layers'", "heads", "neurons", "both"]),
    ],
)
def test_bad_inputs_name_value_and_allowed(kwargs, words):
    model, _ = build_tiny_model()
    args = dict(target="neurons", ratio=0.2, criterion="wanda", reconstruction="liar") | kwargs
    with pytest.raises(ValueError) as err:
        prune_structured(model, _ids(), **args)
    assert all(w in str(err.value) for w in words)


def test_tokens_per_second():
    model, _ = build_tiny_model()
    assert tokens_per_second(model, seqlen=32, repeats=2) > 0
    with pytest.raises(ValueError, match="repeats=0"):
        tokens_per_second(model, repeats=0)


def test_channel_moments_equal_the_whole_matrix_formulas_bit_for_bit():
    # the moments are summed and centred a band of rows at a time (memory); the values must not change
    from pruneflow.structured.liar import ChannelStats

    torch.manual_seed(0)
    stats, xs = ChannelStats(600, gram=True), []
    for _ in range(3):
        xs.append(torch.randn(2, 40, 600) * 3 + 1)
        stats.add(xs[-1])
    gram = torch.zeros(600, 600, dtype=torch.float64)
    for x in xs:
        flat = x.reshape(-1, 600) - stats.shift
        gram += flat.T @ flat
    m = stats.sum / stats.count
    cov = gram / stats.count - torch.outer(m, m)
    assert torch.equal(stats.gram, gram) and torch.equal(stats.covariance, cov)
    assert torch.equal(stats.second_moment, cov + torch.outer(stats.mean, stats.mean))


@pytest.mark.parametrize("recon", ["liar", "liar_weight"])
def test_a_fit_that_takes_the_statistics_gives_the_same_repair_and_frees_their_gram(recon):
    # the workflow's structured job uses a layer's statistics once, so the moment is made in place of the
    # Gram sums (one [n, n] matrix fewer); the repaired weights must be the same bit for bit
    from pruneflow.structured.liar import reconstruct

    torch.manual_seed(0)
    x = torch.randn(3, 50, 40) * 2 + 0.5
    kept, taken = ChannelStats(40, gram=True), ChannelStats(40, gram=True)
    kept.add(x)
    taken.add(x)
    weight, bias, keep = torch.randn(8, 40), torch.randn(8), torch.arange(0, 40, 2)
    expected = reconstruct(recon, weight, bias, keep, kept, 0.1)
    got = reconstruct(recon, weight, bias, keep, taken, 0.1, consume=True)
    assert torch.equal(expected[0], got[0]) and (expected[1] is None) == (got[1] is None)
    assert expected[1] is None or torch.equal(expected[1], got[1])
    assert kept.gram is not None and taken.gram is None
