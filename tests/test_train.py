from dataclasses import replace

import pytest
import torch

from pruneflow.recover.train import TrainConfig, TrainConfigError, lr_factor, reconstruction_loss, train

torch.set_num_threads(1)


def _problem(seed=0):
    """A least-squares problem y = X w* with 8 micro-batches; w is [4, 6]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 16, 6, generator=g)
    w_star = torch.randn(4, 6, generator=g)
    return [(xb, xb @ w_star.T) for xb in x]


def _fit(cfg, mask=None, seed=0):
    batches = _problem()
    w = torch.nn.Parameter(torch.randn(4, 6, generator=torch.Generator().manual_seed(seed)))
    history = train({"w": w}, lambda b: ((b[0] @ w.T - b[1]) ** 2).mean(), batches, cfg, {"w": mask} if mask is not None else None)
    return w.detach(), history


def test_lr_factor_linear_with_warmup():
    assert [lr_factor(s, 10, 2, "linear") for s in range(4)] == [0.5, 1.0, 1.0, 0.875]
    assert lr_factor(9, 10, 2, "linear") == pytest.approx(0.125)  # the last step still moves
    assert lr_factor(5, 10, 0, "constant") == 1.0
    assert lr_factor(0, 10, 0, "cosine") == 1.0
    assert lr_factor(5, 10, 0, "cosine") == pytest.approx(0.5)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_masked_entries_stay_exactly_zero(optimizer):
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(1)) > 0.5
    cfg = TrainConfig(optimizer=optimizer, lr=0.05, steps=30, weight_decay=0.1, schedule="constant")
    w, history = _fit(cfg, mask)
    assert torch.equal(w == 0, ~mask)
    assert history["losses"][-1] < history["losses"][0]
    assert history["steps"] == 30 and history["trainable_params"] == 24


def test_grad_accum_and_epoch_default():
    _, history = _fit(TrainConfig(lr=0.01, grad_accum=4))
    assert history["steps"] == 2  # steps=0: one pass over 8 micro-batches, 4 per step


def test_same_seed_same_weights_other_seed_other_order():
    cfg = TrainConfig(optimizer="adam", lr=0.05, steps=5)
    a, _ = _fit(cfg)
    b, _ = _fit(cfg)
    c, _ = _fit(replace(cfg, seed=1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bad_values_are_named():
    with pytest.raises(TrainConfigError, match="'rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(TrainConfigError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(TrainConfigError, match="does not require gradients"):
        train({"w": torch.zeros(2)}, lambda b: b, [1], TrainConfig())


def test_reconstruction_losses():
    a = torch.randn(3, 5, 8)
    assert float(reconstruction_loss(a, 2 * a, "cosine")) == pytest.approx(0.0, abs=1e-6)
    assert float(reconstruction_loss(a, a + 1, "mse")) == pytest.approx(1.0)


def test_retraining_defaults_follow_perp():
    cfg = TrainConfig.retraining(steps=3)
    assert (cfg.optimizer, cfg.lr, cfg.schedule, cfg.batch_size, cfg.grad_accum, cfg.steps) == ("adamw", 5e-4, "linear", 1, 2, 3)


def test_non_finite_loss_stops_with_the_unit_named():
    from pruneflow.core.tiny import build_tiny_model
    from pruneflow.prune.criteria import get_criterion
    from pruneflow.prune.masks import parse_pattern
    from pruneflow.prune.sequential import prune_model
    from pruneflow.recover.reconstruct import reconstruct_model
    from pruneflow.recover.train import NonFiniteError

    dense, _ = build_tiny_model()
    pruned, _ = build_tiny_model()
    masks = dict(prune_model(pruned, get_criterion("magnitude"), parse_pattern(0.5)))
    calib = torch.randint(2, 258, (4, 16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteError, match=r"reconstruct .*(attn|mlp|block).*lower the learning rate"):
        reconstruct_model(dense, pruned, masks, calib, "sublayer", cfg=TrainConfig(lr=1e12, optimizer="sgd", batch_size=2))
