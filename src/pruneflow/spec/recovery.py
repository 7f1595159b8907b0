"""Recovery modes as registry entries (no torch here: the workflow builds its DAG from them).

A recovery mode is a ``reconstruction`` entry (a granularity of layer-wise reconstruction, spelled after
``recon:`` with its parameters, e.g. ``recon:blocks:3``) or a ``retraining`` entry (spelled by its name,
``retrain:norms``). :func:`recovery_entry` declares one; besides the registry's fields its options say

- ``spelled``: how the granularity reads in a recovery spec (``matrix-adam``; default its name), its
  parameters following it after colons (``blocks:3``) and joined to it in the recovery id (``blocks3``);
- ``settings``: the keys of the config's ``reconstruction``/``retraining`` section it reads (its recovery id
  hashes these only, so another key reruns none of its jobs); an adapter's keys are added where one trains;
- ``memory``: {memory kind: device bytes from the terms of :func:`pruneflow.spec.resources.job_peaks`}, and
  ``memory_kind``: which kind a recovery's trainable set takes (default: the first);
- ``whole_model``: trains the whole model on the next-token loss (no dense targets, not interleavable);
  ``every_weight``: holds every weight in float32 at once; ``closed_form``: solved, not trained;
- ``check_model``: ``(params, model config) -> problem or None``, checked before any job.

The mode's code is its entry's implementation: for a granularity ``reconstruct(ctx, calib_ids, **params)``
returning its units' records (:mod:`pruneflow.recover.reconstruct` runs it); for a retraining
``run(model, arch, keep_masks, calib_ids, subsets, adapter, settings, device, gradient_checkpointing)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from pruneflow.spec import registry
from pruneflow.spec.registry import Entry, Param

RECONSTRUCTION, RETRAINING = "reconstruction", "retraining"  # the registry kinds
RECON = "recon"  # the prefix of every reconstruction's spec and id

# The settings each recovery reads: the optimiser for trained units and retraining, the ridge factor for a closed
# form, the adapter shape only where an adapter is trained. TrainConfig's fields are OPTIMISER_KEYS (tested).
OPTIMISER_KEYS = ("optimizer", "lr", "weight_decay", "schedule", "warmup", "steps", "batch_size", "grad_accum",
                  "max_grad_norm", "loss", "seed", "momentum")
CLOSED_FORM_KEYS = ("damping", "batch_size", "loss")  # loss: the closed form accepts mse only
ADAPTER_KEYS = ("rank", "alpha", "dropout")
UNIT_KEYS = OPTIMISER_KEYS + ("targets",)  # a unit trained towards the dense model's


def unit_memory(t: Mapping) -> float:
    """A layer-wise reconstruction job: the outer modules, a dense and a pruned block, an MLP's float32 masters
    and Adam state, the unit's inputs, outputs and targets in float32."""
    return t["outer"] + 2 * t["block"] + t["mlp_params"] * t["adam"] + 3 * t["hidden32"]


UNIT_MEMORY = {"recon": unit_memory}  # the kind every block-wise granularity shares


def recovery_entry(kind: str, name: str, implementation: str, *, settings: tuple[str, ...], memory: Mapping[str, Callable],
                   memory_kind: Callable[[tuple[str, ...]], str] | None = None, spelled: str | None = None,
                   params: tuple[Param, ...] = (), needs=("calibration", "gradients"), whole_model: bool = False,
                   every_weight: bool = False, closed_form: bool = False, check_model: Callable | None = None,
                   doc: str = "") -> Entry:
    """A recovery mode's entry (see the module's docstring); register it with :func:`registry.register`."""
    if kind not in (RECONSTRUCTION, RETRAINING) or not memory:
        raise registry.RegistryError(f"recovery entry {name!r}: kind {kind!r} and memory {dict(memory)!r}; allowed: kind "
                                     f"{RECONSTRUCTION} or {RETRAINING}, at least one memory kind")
    options = {"spelled": spelled or name, "settings": tuple(settings), "memory": dict(memory), "memory_kind": memory_kind,
               "whole_model": whole_model, "every_weight": every_weight, "closed_form": closed_form, "check_model": check_model}
    return Entry(kind, name, implementation, needs=needs, params=params, memory=next(iter(memory.values())), doc=doc,
                 options=options)


def granularities() -> dict[str, Entry]:
    """{spelled name: entry} of every reconstruction granularity, in registration order."""
    return {e.options["spelled"]: e for e in registry.entries(RECONSTRUCTION).values()}


def retrainings() -> dict[str, Entry]:
    return registry.entries(RETRAINING)


def usage(entry: Entry) -> str:
    """How a granularity is written: ``sublayer``, ``blocks:k``."""
    return ":".join([entry.options["spelled"], *(p.name for p in entry.params)])


def allowed_granularities(whole_model: bool | None = None) -> str:
    return ", ".join(usage(e) for e in granularities().values() if whole_model is None or e.options["whole_model"] == whole_model)


def split_granularity(parts: list[str]) -> tuple[str, list[str]] | None:
    """The granularity at the head of a spec's parts (``["blocks", "3", "dense"]`` → ``("blocks:3", ["dense"])``),
    its parameters of the right type; None when no granularity is spelled there."""
    entry = granularities().get(parts[0]) if parts else None
    if entry is None:
        return None
    n = len(entry.params)
    values = parts[1:1 + n]
    if len(values) < n or not all(_parses(p, v) for p, v in zip(entry.params, values)):
        return None
    return ":".join(parts[:1 + n]), parts[1 + n:]


def _parses(param: Param, text: str) -> bool:
    if param.type is int:
        return text.isdigit()
    if param.type is float:
        return re.fullmatch(r"[0-9.]+", text) is not None
    return bool(text)


def granularity_entry(text: str) -> tuple[Entry, dict]:
    """``"blocks:3"`` → (the blocks entry, {"k": 3}); ValueError naming the value and the allowed ones. The
    parameters' ranges are not checked here (:func:`granularity_problem`)."""
    parts = str(text).strip().split(":")
    found = split_granularity(parts)
    if found is None or found[1]:
        raise ValueError(f"granularity {text!r} is not allowed; allowed: {allowed_granularities()}")
    entry = granularities()[parts[0]]
    return entry, {p.name: p.type(v) for p, v in zip(entry.params, parts[1:])}


def granularity_problem(text: str) -> str | None:
    """What is wrong with a granularity's parameters (``blocks:k needs k >= 1``), or None."""
    entry, params = granularity_entry(text)
    for p in entry.params:
        try:
            p.check(params[p.name])
        except ValueError:
            bounds = [f"{sign} {bound:g}" for sign, bound in ((">=", p.minimum), ("<=", p.maximum)) if bound is not None]
            return f"{usage(entry)} needs {p.name} {' and '.join(bounds) if bounds and not p.choices else 'in ' + p.allowed}"
    return None


def granularity_from_token(token: str) -> str:
    """A recovery id's granularity (``blocks3``, ``matrix-adam``) → its spelling (``blocks:3``)."""
    for spelled, entry in granularities().items():
        values = r"".join(r"([0-9.]+)" for _ in entry.params)
        if m := re.fullmatch(re.escape(spelled) + values, token):
            return ":".join([spelled, *m.groups()])
    raise ValueError(f"granularity {token!r} of a recovery id: allowed {allowed_granularities()}")


def model_problem(recovery, model_config: dict) -> str | None:
    """What keeps ``recovery`` (a :class:`pruneflow.spec.naming.Recovery`, or None) from a model of this config, by
    its entry's ``check_model``; None when nothing does."""
    check = recovery.entry.options["check_model"] if recovery is not None else None
    return check(recovery.params, model_config) if check else None


def memory_kinds() -> dict[str, Callable[[Mapping], float]]:
    """{memory kind: its formula} over every recovery entry; a kind two entries share has one formula."""
    kinds: dict[str, Callable] = {}
    for kind in (RECONSTRUCTION, RETRAINING):
        for entry in registry.entries(kind).values():
            for name, formula in entry.options["memory"].items():
                if kinds.setdefault(name, formula) is not formula:
                    raise registry.RegistryError(f"memory kind {name!r} of {kind} {entry.name!r} has another formula "
                                                 "than the entry that declared it first; name a kind of its own")
    return kinds


def memory_kind(entry: Entry, trainable: str) -> str:
    """The memory kind of a recovery by ``entry`` training ``trainable`` (subsets and adapter joined by +)."""
    choose = entry.options["memory_kind"]
    return choose(tuple(trainable.split("+"))) if choose else next(iter(entry.options["memory"]))
