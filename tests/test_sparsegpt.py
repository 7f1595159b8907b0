"""SparseGPT: lower reconstruction error than score-only criteria, exact patterns, closed-form OBS step."""

import pytest
import torch

from pruneflow.core.activations import InputStats
from pruneflow.core.sparsity import measured_sparsity
from pruneflow.core.tiny import build_tiny_model
from pruneflow.prune.criteria import get_criterion, prune_layer
from pruneflow.prune.masks import Pattern, parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.prune.sparsegpt import sparsegpt_prune

torch.set_num_threads(1)


def _correlated_layer(out_f=48, in_f=192, tokens=1024, seed=0):
    """W [out, in] and X [tokens, in]: columns share 8 latent factors and have scales spanning 30x."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=g)
    shared = torch.randn(tokens, 8, generator=g) @ torch.randn(8, in_f, generator=g)
    scales = torch.logspace(-1, 0.5, in_f)[torch.randperm(in_f, generator=g)]
    x = (torch.randn(tokens, in_f, generator=g) + shared) * scales
    stats = InputStats(in_f, gram=True)
    for chunk in x.split(256):
        stats.add(chunk)
    return weight, x, stats


def _output_error(weight, pruned, x):
    return torch.linalg.matrix_norm((weight - pruned) @ x.T).item()


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_sparsegpt_error_below_wanda_and_magnitude(pattern):
    weight, x, stats = _correlated_layer()
    errors = {}
    for name in ("sparsegpt", "wanda", "magnitude", "magnitude_row"):
        pruned = weight.clone()
        prune_layer(get_criterion(name), pruned, stats, parse_pattern(pattern))
        errors[name] = _output_error(weight, pruned, x)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]
    # Updating the kept weights buys a large margin, not a rounding difference.
    assert errors["sparsegpt"] < 0.7 * errors["wanda"], errors


def test_zero_sparsity_leaves_weights_unchanged():
    weight, _, stats = _correlated_layer()
    pruned = weight.clone()
    keep = sparsegpt_prune(pruned, stats.gram, Pattern(ratio=0.0))
    assert keep.all()
    torch.testing.assert_close(pruned, weight, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ratio,blocksize", [(0.5, 128), (0.5, 64), (0.3, 50)])
def test_unstructured_prunes_exactly_the_share_of_each_block(ratio, blocksize):
    weight, _, stats = _correlated_layer()
    out_f, in_f = weight.shape
    keep = sparsegpt_prune(weight, stats.gram, Pattern(ratio=ratio), blocksize=blocksize)
    assert torch.equal(keep, weight != 0)
    for start in range(0, in_f, blocksize):
        block = keep[:, start : start + blocksize]
        assert int((~block).sum()) == int(block.numel() * ratio)
    assert abs((~keep).float().mean().item() - ratio) < 0.01


@pytest.mark.parametrize("n,m,blocksize", [(2, 4, 128), (4, 8, 128), (1, 4, 128), (4, 8, 30)])
def test_nm_is_exact_in_every_group(n, m, blocksize):
    weight, _, stats = _correlated_layer()
    keep = sparsegpt_prune(weight, stats.gram, Pattern(n=n, m=m), blocksize=blocksize)
    assert torch.equal(keep, weight != 0)
    zeros = (~keep).reshape(weight.shape[0], -1, m).sum(-1)
    assert torch.equal(zeros, torch.full_like(zeros, m - n))


def test_single_pruned_column_matches_the_damped_least_squares_solution():
    # Only column 0 is pruned (its weights are far smaller than all others), so one OBS step over
    # all later columns must equal argmin_{Ŵ, Ŵ[:,0]=0} tr((W-Ŵ) H (W-Ŵ)ᵀ), solved here directly.
    weight, _, stats = _correlated_layer(out_f=8, in_f=64)
    g = torch.Generator().manual_seed(5)
    weight = torch.sign(weight) * (0.5 + torch.rand(weight.shape, generator=g))
    weight[:, 0] *= 0.05
    out_f, in_f = weight.shape
    pruned = weight.clone()
    keep = sparsegpt_prune(pruned, stats.gram, Pattern(ratio=(out_f + 0.5) / (out_f * in_f)), blocksize=in_f)
    assert torch.equal(~keep[:, 0], torch.ones(out_f, dtype=torch.bool)) and keep[:, 1:].all()

    h = stats.gram.double()
    h += 0.01 * h.diagonal().mean() * torch.eye(in_f, dtype=h.dtype)
    w = weight.double()
    # Normal equations for the free columns r: Ŵ_r H_rr = W H_{:, r}.
    expected_rest = torch.linalg.solve(h[1:, 1:], (w @ h[:, 1:]).T).T
    torch.testing.assert_close(pruned[:, 1:].double() - w[:, 1:], expected_rest - w[:, 1:], rtol=1e-3, atol=1e-5)
    assert (pruned[:, 1:] - weight[:, 1:]).abs().max() > 1e-3  # the update is real


def test_bfloat16_weights_dead_inputs_and_determinism():
    weight, x, _ = _correlated_layer(out_f=16, in_f=64)
    x[:, [3, 40]] = 0  # dead inputs: diag(H) = 0
    stats = InputStats(64, gram=True)
    stats.add(x)
    results = []
    for _ in range(2):
        w = weight.to(torch.bfloat16)
        keep = sparsegpt_prune(w, stats.gram, Pattern(n=2, m=4))
        assert w.dtype == torch.bfloat16 and torch.isfinite(w.float()).all()
        results.append((keep, w))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    keep, w = results[0]
    assert (w[:, [3, 40]] == 0).all() and not keep[:, [3, 40]].all()
    assert torch.equal(keep, w != 0)


def test_shape_errors_name_the_shapes():
    weight, _, stats = _correlated_layer(out_f=4, in_f=32)
    with pytest.raises(ValueError, match=r"\(16, 16\).*\(32, 32\)"):
        sparsegpt_prune(weight, stats.gram[:16, :16], Pattern(ratio=0.5))


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_prune_model_sequential_reaches_sparsity_on_every_matrix(pattern):
    model, _ = build_tiny_model()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    calib = torch.randint(2, 258, (8, 32), generator=torch.Generator().manual_seed(0))
    all_masks = dict(prune_model(model, get_criterion("sparsegpt"), parse_pattern(pattern), calib, stream="sequential", batch_size=4))
    assert sorted(all_masks) == [0, 1]

    report = measured_sparsity(model)
    assert len(report["per_matrix"]) == 2 * 7
    for entry in report["per_matrix"].values():
        assert entry["sparsity"] == pytest.approx(0.5, abs=1e-9)
    state = model.state_dict()
    updated = 0
    for index, masks in all_masks.items():
        for name, keep in masks.items():
            key = f"model.layers.{index}.{name}.weight"
            assert torch.equal(keep, state[key] != 0)
            updated += int((state[key][keep] != dense[key][keep]).sum())
    assert updated > 0  # SparseGPT changes the kept weights; score criteria would not
    with torch.no_grad():
        assert torch.isfinite(model(calib[:2]).logits).all()


def test_lazy_block_updates_equal_column_by_column_updates():
    # For N:M the mask is chosen column by column on the weights updated so far, so the blocked
    # ("lazy batch") update must give the same result as any other block size.
    weight, _, stats = _correlated_layer(out_f=16, in_f=96)
    results = []
    for blocksize in (128, 32, 8):
        w = weight.clone()
        results.append((sparsegpt_prune(w, stats.gram, Pattern(n=2, m=4), blocksize=blocksize), w))
    for keep, w in results[1:]:
        assert torch.equal(keep, results[0][0])
        torch.testing.assert_close(w, results[0][1], rtol=1e-4, atol=1e-5)


def _algorithm_1(weight, gram, pattern, blocksize=128, percdamp=0.01):
    """SparseGPT's Algorithm 1 written out directly (float64, cholesky_inverse then an upper
    Cholesky, one column at a time on W itself): the reference for the optimised implementation."""
    w = weight.double().clone()
    h = gram.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += percdamp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, w.shape[1], blocksize):
        i2 = min(i1 + blocksize, w.shape[1])
        d = torch.diagonal(hinv)[i1:i2]
        if not pattern.is_nm:
            saliency = (w[:, i1:i2] ** 2 / d**2).flatten()
            k = int(saliency.numel() * pattern.ratio)
            block = torch.zeros_like(saliency, dtype=torch.bool)
            block[torch.sort(saliency, stable=True).indices[:k]] = True
            pruned[:, i1:i2] = block.view(w.shape[0], i2 - i1)
        for i in range(i1, i2):
            if pattern.is_nm and (i - i1) % pattern.m == 0:
                group = w[:, i : i + pattern.m] ** 2 / torch.diagonal(hinv)[i : i + pattern.m] ** 2
                idx = torch.sort(group, dim=1, stable=True).indices[:, : pattern.m - pattern.n]
                pruned[:, i : i + pattern.m].scatter_(1, idx, True)
            err = w[:, i] * pruned[:, i] / hinv[i, i]
            w[:, i:] -= err[:, None] * hinv[i, i:][None, :]  # reaches past the block: no lazy batching
            w[:, i] = torch.where(pruned[:, i], 0.0, w[:, i])
    return w, ~pruned


@pytest.mark.parametrize("pattern,blocksize", [("0.5", 128), ("0.7", 48), ("2:4", 128), ("4:8", 40)])
def test_matches_algorithm_1_written_out(pattern, blocksize):
    weight, x, stats = _correlated_layer(out_f=40, in_f=160)
    x[:, 7] = 0  # one dead input
    stats = InputStats(160, gram=True)
    stats.add(x)
    expected_w, expected_keep = _algorithm_1(weight, stats.gram, parse_pattern(pattern), blocksize)
    w = weight.clone()
    keep = sparsegpt_prune(w, stats.gram, parse_pattern(pattern), blocksize=blocksize)
    assert torch.equal(keep, expected_keep)
    torch.testing.assert_close(w.double(), expected_w, rtol=1e-4, atol=1e-4)


def test_statistics_do_not_depend_on_batching_order_or_threads():
    """Per-sample float32 products summed in float64: the same Gram (bit for bit, after rounding once)
    whatever the batch size, the sample order or the thread count."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 64, 96, generator=g) * torch.logspace(-1, 1, 96)
    grams = []
    for batch, order, threads in ((12, range(12), 1), (1, reversed(range(12)), 1), (5, [3, 7, 0, 11, 1, 9, 2, 10, 4, 8, 5, 6], 2)):
        torch.set_num_threads(threads)
        stats = InputStats(96, gram=True)
        for chunk in x[list(order)].split(batch):
            stats.add(chunk)
        grams.append((stats.gram, stats.sq_sum))
    torch.set_num_threads(1)
    for gram, sq_sum in grams[1:]:
        assert torch.equal(gram, grams[0][0]) and torch.equal(sq_sum, grams[0][1])


def test_sparsegpt_same_result_with_any_thread_count():
    weight, _, stats = _correlated_layer(out_f=32, in_f=384)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        w = weight.clone()
        results.append((sparsegpt_prune(w, stats.gram, Pattern(n=2, m=4)), w))
    torch.set_num_threads(1)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert torch.get_num_threads() == 1  # restored after the one-thread factorisation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_factor_equals_the_out_of_place_one_bit_for_bit(dtype):
    # the factor is computed in place (a memory saving); it must give exactly the values of the plain formula,
    # dead inputs and a rank-deficient Hessian included
    from pruneflow.prune.sparsegpt import inverse_hessian_factor

    torch.manual_seed(0)
    for rows, cols, dead in [(300, 200, [3, 50]), (5, 200, [])]:  # the second is of rank 5: the dampening makes it definite
        x = torch.randn(rows, cols, dtype=dtype)
        x[:, dead] = 0
        gram = x.t() @ x
        factor, found_dead = inverse_hessian_factor(gram)

        h = gram.flip(0, 1).clone()
        flipped_dead = torch.diagonal(h) == 0
        h[flipped_dead, flipped_dead] = 1
        damp, lower = 0.01 * torch.diagonal(h).mean(), None
        while lower is None:
            torch.diagonal(h).add_(damp)
            lower, info = torch.linalg.cholesky_ex(h)
            lower, damp = (lower, damp) if info == 0 else (None, damp * 10)
        expected = torch.linalg.solve_triangular(lower, torch.eye(cols, dtype=dtype), upper=False).flip(0, 1)
        assert torch.equal(factor, expected) and found_dead.tolist() == [i in dead for i in range(cols)]


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_factor_in_the_grams_memory_gives_the_same_pruning(pattern):
    """``consume``: the inverse factor is built in the Gram's memory (one [in, in] matrix fewer at the peak).
    The masks and updated weights are bit for bit those of a run that leaves the Gram alone, and the Gram is
    only overwritten when the caller gives it away."""
    from pruneflow.prune.sparsegpt import reversed_inverse_factor

    torch.manual_seed(0)
    x = torch.randn(400, 8) @ torch.randn(8, 128) + 0.1 * torch.randn(400, 128)
    gram = x.t() @ x
    weight = torch.randn(48, 128)
    kept, overwritten = gram.clone(), gram.clone()
    w_kept, w_consumed = weight.clone(), weight.clone()
    keep = sparsegpt_prune(w_kept, kept, parse_pattern(pattern), blocksize=32)
    assert torch.equal(kept, gram)
    assert torch.equal(sparsegpt_prune(w_consumed, overwritten, parse_pattern(pattern), blocksize=32, consume=True), keep)
    assert torch.equal(w_consumed, w_kept) and not torch.equal(overwritten, gram)
    lower_inv, _ = reversed_inverse_factor(gram.clone(), overwrite=True)
    assert torch.equal(lower_inv, reversed_inverse_factor(gram)[0])


def test_pruning_takes_the_statistics_gram_only_at_its_last_use():
    stats = InputStats(64, gram=True)
    stats.add(torch.randn(2, 50, 64))
    stats.round_gram()
    gram = stats.gram
    prune_layer(get_criterion("sparsegpt"), torch.randn(16, 64), stats, parse_pattern(0.5))
    assert torch.equal(stats.gram, gram)  # a copy was used
    prune_layer(get_criterion("sparsegpt"), torch.randn(16, 64), stats, parse_pattern(0.5), consume=True)
    assert stats.gram is None


@pytest.mark.parametrize("pattern", ["0.5", "4:8"])
def test_linears_that_share_statistics_share_one_inverse_factor(pattern, monkeypatch):
    # q/k/v read one input: its Gram is factored once, taken from the statistics at the first linear, and each
    # linear is pruned bit for bit as with a copy of the Gram of its own
    from pruneflow.prune import sparsegpt

    weight, _, stats = _correlated_layer(out_f=24, in_f=64)
    weights = [weight, weight.flip(0), weight * 2]
    expected = [(sparsegpt_prune(w := v.clone(), stats.gram, parse_pattern(pattern)), w) for v in weights]
    factored = []
    monkeypatch.setattr(sparsegpt, "reversed_inverse_factor",
                        lambda *a, **k: factored.append(1) or sparsegpt._reversed_inverse_factor(a[0], a[1], k["overwrite"]))
    factors = {}
    for i, (v, (keep, pruned)) in enumerate(zip(weights, expected)):
        w = v.clone()
        assert torch.equal(prune_layer(get_criterion("sparsegpt"), w, stats, parse_pattern(pattern), consume=i == 2, factors=factors), keep)
        assert torch.equal(w, pruned)
        assert stats.gram is None and list(factors) == ([stats] if i < 2 else [])  # dropped at the last use
    assert len(factored) == 1


def test_a_factor_of_another_dtype_is_refused():
    from pruneflow.prune.sparsegpt import InverseHessian

    weight, _, stats = _correlated_layer(out_f=8, in_f=32)
    factor = InverseHessian.of(stats.gram, weight)
    with pytest.raises(ValueError, match="torch.float64 weight needs a torch.float64 factor, got torch.float32"):
        sparsegpt_prune(weight.double(), factor, parse_pattern("0.5"))
