"""Readable names of exported variants: the folder a study's export gives each variant.

A variant's path spells every parameter (``pruned/brown-n16-l256-s0/wanda-2of4-seq``); an exported folder
is named for a reader: ``wanda-2of4-sequential``, ``wanda-0.5-sequential-recon-sublayer``,
``fluctuation-neurons-0.2-liar``. Settings a study holds fixed (the calibration, a recovery's optimiser
hash) are left out; they are in the folder's card. Names are unique within a study (checked).
"""

from __future__ import annotations

from pruneflow.spec.naming import is_damped, parse_calib_id, parse_method_id, parse_recovery_id, parse_structured_id

STREAM_WORDS = {"sequential": "sequential", "dense": "dense-stream"}


def export_name(variant: str, calibration: dict) -> str:
    """The folder name of ``variant`` (a path under ``results/<model>/``). ``calibration``: the config's; a
    variant calibrated with another seed (``calibration_seeds``) gets ``-seed<S>``."""
    kind, *rest = variant.split("/")
    if kind == "dense":
        return "dense"
    if kind == "pruned":
        return _pruned_name(rest[1]) + _seed_suffix(rest[0], calibration)
    if kind == "recovered":
        return f"{_pruned_name(rest[1])}-{_recovery_name(rest[3])}" + _seed_suffix(rest[0], calibration)
    if kind == "structured":
        m = parse_structured_id(rest[1])
        name = f"{m.criterion}-{m.target}-{m.ratio:g}-{m.reconstruction.replace('_', '-')}"
        if is_damped(m.reconstruction) and m.damping != "auto":
            name += f"-damping{float(m.damping):g}"
        return name
    raise ValueError(f"variant {variant!r}: expected dense, pruned/..., recovered/... or structured/...")


def export_names(variants: list[str], calibration: dict) -> dict[str, str]:
    """{variant: folder name} for a study's variants; fails if two would share a folder."""
    names = {v: export_name(v, calibration) for v in variants}
    seen: dict[str, str] = {}
    for variant, name in names.items():
        if name in seen:
            raise ValueError(f"variants {seen[name]!r} and {variant!r} would both be exported as {name!r}")
        seen[name] = variant
    return names


def _pruned_name(method_id: str) -> str:
    method = parse_method_id(method_id)
    pattern = method.pattern
    parts = [method.scorer.token, pattern.token if pattern.is_nm else f"{pattern.ratio:g}"]
    parts += [p.token for p in (method.allocation, method.refinement) if p]
    if method.stream:
        parts.append(STREAM_WORDS[method.stream])
    return "-".join(parts)


def _recovery_name(token: str) -> str:
    """``recon-sublayer-pruned-all-<hash>`` → ``recon-sublayer``; the defaults (pruned inputs, every weight
    trainable) left out, ``+`` (not allowed in a Hub repository name) spelled ``-``."""
    rec = parse_recovery_id(token)
    if not rec.is_reconstruction:
        return f"{rec.mode}-" + rec.trainable.replace("+", "-")
    parts = [rec.mode, rec.granularity.replace(":", "")]
    parts += [rec.inputs] if rec.inputs != "pruned" else []
    parts += [rec.trainable.replace("+", "-")] if rec.trainable != "all" else []
    parts += ["interleaved"] if rec.interleaved else []
    return "-".join(parts)


def _seed_suffix(calib: str, calibration: dict) -> str:
    seed = None if calib == "none" else parse_calib_id(calib)["seed"]
    return "" if seed in (None, int(calibration["seed"])) else f"-seed{seed}"
