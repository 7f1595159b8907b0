"""retrain — PERP (Zimmer, Andoni, Spiegel, Pokutta): the whole pruned model on the next-token loss, training only
chosen parameter subsets and/or one adapter (:mod:`pruneflow.recover.retrain`), with PERP's optimiser defaults."""

from pruneflow.spec.recovery import OPTIMISER_KEYS, RETRAINING, recovery_entry
from pruneflow.spec.registry import register


def run(model, arch, keep_masks, calib_ids, subsets, adapter, settings: dict, device="cpu", gradient_checkpointing=False) -> dict:
    """Retrain ``model`` in place; ``settings``: the optimiser's, PERP's defaults filled in."""
    from pruneflow.recover.retrain import retrain
    from pruneflow.recover.train import TrainConfig

    return retrain(model, keep_masks, calib_ids, subsets, adapter, TrainConfig.retraining(**settings), device,
                   gradient_checkpointing, arch)


def memory(t) -> float:
    """The whole model once, float32 masters and Adam state of the norms, the activations kept, logits and their
    gradient; and as each block is written, it is compared with its parent's block as read (that block, its keep-masks
    and the kept values of both: about four blocks' bytes, measured)."""
    return t["model_bytes"] + t["blocks"] * t["hidden"] * 2 * t["adam"] + t["saved"] + 2 * t["logits"] + 4 * t["block"]


def adapter_memory(t) -> float:
    """MaskLoRA/ScaleLoRA also make one layer's weight W' at a time (and its gradient and a keep-mask)."""
    return memory(t) + t["merged"]


def full_memory(t) -> float:
    """Every weight trains: float32 masters and Adam state of all of them."""
    return t["model_bytes"] + t["params"] * t["adam"] + t["saved"] + 2 * t["logits"]


def memory_kind(trainable: tuple[str, ...]) -> str:
    if "full" in trainable:
        return "retrain_full"
    return "retrain_adapter" if {"masklora", "scalelora"} & set(trainable) else "retrain"


ENTRY = register(recovery_entry(
    RETRAINING, "retrain", "pruneflow.methods.retrain:run", settings=OPTIMISER_KEYS, whole_model=True,
    memory={"retrain": memory, "retrain_adapter": adapter_memory, "retrain_full": full_memory}, memory_kind=memory_kind,
    doc="PERP: the whole model on the next-token loss, only the named subsets and adapter trained",
))
