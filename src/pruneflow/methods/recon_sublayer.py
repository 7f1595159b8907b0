"""recon:sublayer — the attention and the MLP of each block, one after the other, each with the norms around it
(pre_norm → module → post_norm, as the architecture adapter finds them); the Free Lunch paper's recommended unit."""

from pruneflow.spec.recovery import RECONSTRUCTION, UNIT_KEYS, UNIT_MEMORY, recovery_entry
from pruneflow.spec.registry import register


def reconstruct(ctx, calib_ids):
    from pruneflow.recover.reconstruct import Unit, reconstruct_units

    # the MLP reads what the attention gave: the streams move past a block once its MLP is done
    units = [Unit(f"{i}.{part}", [i], part, finishes=part == "mlp") for i in range(ctx.p.num_blocks) for part in ("attn", "mlp")]
    return reconstruct_units(ctx, calib_ids, units)


ENTRY = register(recovery_entry(
    RECONSTRUCTION, "sublayer", "pruneflow.methods.recon_sublayer:reconstruct", settings=UNIT_KEYS, memory=UNIT_MEMORY,
    doc="attention and MLP of each block in turn, each with its norms",
))
