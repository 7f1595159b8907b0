"""recon:block and recon:blocks:k — one transformer block, or k consecutive blocks together, as the unit."""

from pruneflow.spec.recovery import RECONSTRUCTION, UNIT_KEYS, UNIT_MEMORY, recovery_entry
from pruneflow.spec.registry import Param, register


def reconstruct(ctx, calib_ids, k: int = 1):
    from pruneflow.recover.reconstruct import Unit, reconstruct_units

    n = ctx.p.num_blocks
    units = [Unit(f"{i}" if k == 1 else f"{i}-{min(i + k, n) - 1}", list(range(i, min(i + k, n))), "blocks") for i in range(0, n, k)]
    return reconstruct_units(ctx, calib_ids, units)


def check_model(params: dict, model_config: dict) -> str | None:
    """k blocks of a model that has fewer: named before any job."""
    layers = model_config.get("num_hidden_layers")
    if layers and params["k"] > layers:
        return f"it has {layers} blocks; allowed: blocks:1 to blocks:{layers}"
    return None


BLOCK_ENTRY = register(recovery_entry(
    RECONSTRUCTION, "block", "pruneflow.methods.recon_blocks:reconstruct", settings=UNIT_KEYS, memory=UNIT_MEMORY,
    doc="one transformer block",
))
ENTRY = register(recovery_entry(
    RECONSTRUCTION, "blocks", "pruneflow.methods.recon_blocks:reconstruct", settings=UNIT_KEYS, memory=UNIT_MEMORY,
    params=(Param("k", 2, int, minimum=1, doc="consecutive blocks trained together"),), check_model=check_model,
    doc="k consecutive blocks together",
))
