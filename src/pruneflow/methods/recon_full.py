"""recon:full — the whole model on the next-token loss of the calibration windows, every weight (or the named
subsets and adapter) trained at once; the code PERP retraining shares (:mod:`pruneflow.recover.whole_model`)."""

from pruneflow.spec.recovery import RECONSTRUCTION, UNIT_KEYS, recovery_entry
from pruneflow.spec.registry import register


def reconstruct(ctx, calib_ids):
    """One unit, its loss the calibration cross-entropy (before and after: on the first PROBE_CHUNKS chunks)."""
    import torch

    from pruneflow.recover.reconstruct import PROBE_CHUNKS
    from pruneflow.recover.whole_model import next_token_loss, train_whole_model

    model = ctx.p.model
    loss = next_token_loss(model, ctx.device)
    probe = calib_ids.split(ctx.cfg.batch_size)[:PROBE_CHUNKS]
    with torch.no_grad():
        model.to(ctx.device).eval()
        before = sum(float(loss(b)) * len(b) for b in probe) / sum(len(b) for b in probe)
    history = train_whole_model(model, ctx.arch, ctx.keep_masks, calib_ids, ctx.subsets, ctx.adapter, ctx.cfg, ctx.device)
    with torch.no_grad():
        after = sum(float(loss(b)) * len(b) for b in probe) / sum(len(b) for b in probe)
    ctx.notes += [f"subset {s} unavailable" for s in history["unavailable"]]
    return [{"unit": "model", "before": before, "after": after, "steps": history["steps"],
             "trainable_params": history["trainable_params"], "seconds": history["seconds"]}]


def memory(t) -> float:
    """Two whole models (the float32 copy trained and the one stored), Adam state for every weight, the activations kept."""
    return 2 * t["model_bytes"] + t["params"] * t["adam"] + t["saved"]


ENTRY = register(recovery_entry(
    RECONSTRUCTION, "full", "pruneflow.methods.recon_full:reconstruct", settings=UNIT_KEYS, memory={"recon_full": memory},
    whole_model=True, every_weight=True, doc="the whole model on the next-token loss",
))
