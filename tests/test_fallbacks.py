"""Numerical fallbacks are recorded (pruneflow.core.fallbacks): each is forced here, and its count per layer, its log
line naming the layer, the variant's summary and the table's column are checked."""

import pandas as pd
import pytest
import torch

from pruneflow.core import fallbacks
from pruneflow.core.summaries import variant_summary
from pruneflow.core.tiny import build_tiny_model
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.prune.sparsegpt import sparsegpt_prune
from pruneflow.recover.least_squares import masked_least_squares
from pruneflow.report.tables import add_fallback_column
from pruneflow.spec.naming import parse_method_id

torch.set_num_threads(1)


def _gram(in_f=16, seed=0):
    x = torch.randn(256, in_f, generator=torch.Generator().manual_seed(seed))
    return x.T @ x


def _prune(gram, name=("model.layers.0", "mlp.down_proj")):
    weight = torch.randn(8, gram.shape[0], generator=torch.Generator().manual_seed(1))
    with fallbacks.recording() as counts, fallbacks.layer(name[0]), fallbacks.layer(name[1]):
        keep = sparsegpt_prune(weight, gram, parse_pattern(0.5))
    return weight, keep, counts


def test_a_hessian_not_positive_definite_raises_the_dampening_and_says_so(capsys):
    """A negative eigenvalue (as float32 round-off leaves in a near-singular Gram) that 1% of the mean diagonal does
    not cover: the dampening is raised twice (×10, ×100), counted, and logged with the layer's name."""
    gram = torch.eye(16)
    gram[3, 3] = -0.5  # mean diagonal 0.906: 0.00906 and 0.0906 added do not cover it, 0.906 more does
    weight, keep, counts = _prune(gram)
    assert counts == {"model.layers.0.mlp.down_proj": {"dampening_raised": 2}}
    log = capsys.readouterr().out
    assert ("numerical fallback at model.layers.0.mlp.down_proj: the Hessian was not positive definite in torch.float32: "
            "dampening multiplied by 10 2 time(s), 1.01 added to its diagonal in all (0.01 × its mean at first") in log
    assert torch.isfinite(weight).all() and (~keep).sum() == 8 * 8  # pruned all the same


def test_a_positive_definite_hessian_records_nothing(capsys):
    _, _, counts = _prune(_gram())
    assert counts == {} and "numerical fallback" not in capsys.readouterr().out


def test_a_dead_input_is_counted_per_column_and_its_weights_zeroed(capsys):
    gram = _gram()
    gram[[2, 9], :] = 0
    gram[:, [2, 9]] = 0  # inputs 2 and 9 were never nonzero
    weight, _, counts = _prune(gram)
    assert counts == {"model.layers.0.mlp.down_proj": {"dead_inputs": 2}}
    assert "numerical fallback at model.layers.0.mlp.down_proj: 2 of 16 inputs were never nonzero" in capsys.readouterr().out
    assert (weight[:, [2, 9]] == 0).all()


def test_a_singular_reconstruction_system_is_solved_by_least_squares_and_counted(capsys):
    """recon:matrix without damping: a row whose kept inputs include a dead one has a singular system (Cholesky
    fails), so that row is solved by least squares, counted per row and logged; rows without it are not counted."""
    gram = _gram()
    gram[5, :] = gram[:, 5] = 0  # input 5 never nonzero
    dense = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    keep = torch.ones(4, 16, dtype=torch.bool)
    keep[:2, 5] = False  # rows 0 and 1 drop the dead input (their systems are definite); rows 2 and 3 keep it
    with fallbacks.recording() as counts, fallbacks.layer("model.layers.1"), fallbacks.layer("self_attn.o_proj"):
        out = masked_least_squares(dense, keep, gram, damp=0.0)
    assert counts == {"model.layers.1.self_attn.o_proj": {"least_squares": 2}}
    assert "numerical fallback at model.layers.1.self_attn.o_proj: 2 of 2 rows' kept-weight systems" in capsys.readouterr().out
    assert torch.isfinite(out).all() and (out[~keep] == 0).all()


def test_a_pruning_run_names_the_block_and_linear_of_each_fallback(capsys):
    """The tiny LLaMA with one channel of block 1's attention norm at zero: q, k and v (which share one inverse
    factor) read a dead input there; the count lands on the linear the factor was made for, in block 1 only."""
    model, _ = build_tiny_model()
    with torch.no_grad():
        model.model.layers[1].input_layernorm.weight[5] = 0
    calib = torch.randint(2, 258, (4, 32), generator=torch.Generator().manual_seed(0))
    with fallbacks.recording() as counts:
        for _ in prune_model(model, get_criterion("sparsegpt"), parse_pattern(0.5), calib, "sequential", 2):
            pass
    assert counts == {"model.layers.1.self_attn.q_proj": {"dead_inputs": 1}}
    assert "numerical fallback at model.layers.1.self_attn.q_proj: 1 of 64 inputs" in capsys.readouterr().out


def test_the_summary_and_the_table_show_the_counts():
    recorded = {"model.layers.0.self_attn.q_proj": {"dampening_raised": 2, "dead_inputs": 3},
                "model.layers.1.mlp.down_proj": {"dampening_raised": 1}}
    method = parse_method_id("sparsegpt-u0.5-seq")
    summaries = [{"variant": "dense"}, variant_summary(method, "c", recorded), variant_summary(method, "c"),
                 {"criterion": "sparsegpt"}]  # made before fallbacks were recorded
    assert summaries[1]["fallbacks"] == recorded and summaries[2]["fallbacks"] == {}
    df = add_fallback_column(pd.DataFrame({"method": ["dense", "a", "b", "c"]}), summaries)
    assert list(df.fallbacks) == ["-", "dampening_raised ×3 in 2 layers; dead_inputs ×3 in 1 layer", "none", "-"]
    assert "fallbacks" not in add_fallback_column(pd.DataFrame({"method": ["b"]}), summaries[2:3]).columns  # none: no column
    assert fallbacks.merged(recorded, {"model.layers.1.mlp.down_proj": {"dampening_raised": 1}})[
        "model.layers.1.mlp.down_proj"] == {"dampening_raised": 2}


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="fallback kind 'other'; allowed: dampening_raised, dead_inputs"):
        fallbacks.note("other", "x")
