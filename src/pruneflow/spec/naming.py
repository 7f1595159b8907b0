"""Names of artifacts: every path spells the parameters that made it.

A variant is a model state under ``results/<model>/``: ``dense``, or
``pruned/<calibration id>/<method id>``, e.g. ``pruned/brown-n32-l256-s0/wanda-u0.5-seq``.
Methods that need no calibration use the calibration id ``none``.

The reference data protocol (``calibration.protocol`` / ``perplexity.protocol: reference``) adds a ``-ref``
part to the names it makes (``c4-n128-l2048-s0-ref``, ``ppl-wikitext2-l4096-w0-ref.json``); PruneFlow's own
protocol, the default, keeps the names it always had, so the two never share a file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pruneflow.spec import registry
from pruneflow.spec.patterns import Pattern, parse_pattern
from pruneflow.spec.recovery import (
    ADAPTER_KEYS,
    RECON,
    RETRAINING,
    allowed_granularities,
    granularity_entry,
    granularity_from_token,
    memory_kind,
    retrainings,
    split_granularity,
)

STREAM_TOKENS = {"sequential": "seq", "dense": "dense"}


REFERENCE_TOKEN = "ref"


def calib_id(calibration: dict) -> str:
    c = calibration
    ref = f"-{REFERENCE_TOKEN}" if c.get("protocol", "pruneflow") == "reference" else ""
    return f"{c['corpus']}-n{c['nsamples']}-l{c['seqlen']}-s{c['seed']}{ref}"


CALIB_ID = r"(.+)-n(\d+)-l(\d+)-s(\d+)(?:-(ref))?"
CALIB_ID_PATTERN = r"[^/]+-n\d+-l\d+-s\d+(?:-ref)?"  # the same, without groups: a rule's wildcard constraint


def parse_calib_id(text: str) -> dict:
    """``brown-n32-l256-s0`` → {corpus, nsamples, seqlen, seed, protocol}; inverse of :func:`calib_id`."""
    m = re.fullmatch(CALIB_ID, text)
    if not m:
        raise ValueError(f"calibration id {text!r}: expected <corpus>-n<nsamples>-l<seqlen>-s<seed>[-ref]")
    corpus, n, seqlen, seed, ref = m.groups()
    protocol = "reference" if ref else "pruneflow"
    return {"corpus": corpus, "nsamples": int(n), "seqlen": int(seqlen), "seed": int(seed), "protocol": protocol}


# Pruning methods (spec/registry.py): a criterion or a solver, optionally a mask refinement after it, with a layer-wise
# sparsity allocation. Method id: <scorer>-<pattern>[-<allocation>][-<refinement>][-seq|-dense], e.g. wanda-u0.5-seq,
# sparsegpt-2of4-dense, wanda-u0.7-owl-m5-l0.08-seq. Each part is its registered name, then the hyperparameters its
# entry spells (OWL: -m<M>-l<lambda>) and, where another one differs from its default, a token p<hash> of those settings
# (ria-p1a2b3c4d-u0.5-seq): at the defaults every id is the one it always was, a changed value gets its own path
# (switching back costs nothing), and the tables spell the settings out. The uniform allocation (an entry marked
# implicit) has no token. An allocation's per-block ratios are their own artifact,
# allocation/<calib or none>/<allocation token>-<pattern>, so a changed lambda reruns the allocation, the masks and below.
SCORER_KINDS = ("criterion", "solver")
DIGEST = r"p[0-9a-f]{8}"


def settings_digest(changed: Mapping) -> str:
    """8 hex digits of the sorted JSON of the settings that differ from their defaults."""
    return hashlib.sha256(json.dumps(dict(changed), sort_keys=True).encode()).hexdigest()[:8]


def spec_name(spec) -> tuple[str, dict]:
    """A config item naming a method: ``"ria"`` or ``{name: ria, a: 0.3}`` → (name, {parameter: value})."""
    if isinstance(spec, Mapping):
        given = dict(spec)
        name = given.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"{dict(spec)!r} names no method; allowed: a name, or {{name: <method>, <parameter>: <value>}}")
        return name, given
    if not isinstance(spec, str):
        raise ValueError(f"{spec!r} is not allowed; allowed: a method's name, or {{name: <method>, <parameter>: <value>}}")
    return spec, {}


def _entry(kinds: tuple[str, ...], name: str):
    found = {n: e for kind in kinds for n, e in registry.entries(kind).items()}
    if name not in found:
        raise registry.RegistryError(f"unknown {' or '.join(kinds)} {name!r}; allowed: {', '.join(found) or 'none'}")
    return found[name]


@dataclass(frozen=True)
class Part:
    """One registered method in a variant's making (its criterion or solver, allocation, refinement): its name and
    the settings that differ from the entry's defaults."""

    kind: str
    name: str
    changed: tuple = ()  # (parameter, value) pairs that differ from the defaults, sorted
    digest: str = ""  # from an id whose settings were not given: the id is known, the settings are not

    @classmethod
    def of(cls, kinds: str | tuple[str, ...], spec) -> "Part":
        """From a config item (a name, or {name: ..., <parameter>: <value>}); errors name the value and what is allowed."""
        name, given = spec_name(spec)
        entry = _entry((kinds,) if isinstance(kinds, str) else kinds, name)
        return cls(entry.kind, name, tuple(sorted(entry.changed(given).items())))

    @property
    def entry(self) -> registry.Entry:
        return registry.get(self.kind, self.name)

    @property
    def settings(self) -> dict:
        """Every hyperparameter, defaults filled."""
        if self.digest:
            raise ValueError(f"{self.token}: no study of this configuration gives its settings (hash p{self.digest})")
        return self.entry.settings(dict(self.changed))

    @property
    def token(self) -> str:
        spelled = self.entry.options.get("spelled", {})
        values = self.entry.settings(dict((k, v) for k, v in self.changed if k in spelled))
        hidden = {k: v for k, v in self.changed if k not in spelled}
        digest = self.digest or (settings_digest(hidden) if hidden else "")
        return "-".join([self.name, *(f"{abbr}{values[p]:g}" for p, abbr in spelled.items()), *([f"p{digest}"] if digest else [])])

    @property
    def label(self) -> str:
        """The name and its changed settings, spelled out (the tables' words for the hash)."""
        if self.digest:
            return self.token
        return self.name + "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}" for k, v in self.changed)


def part_regex(kinds: str | tuple[str, ...]) -> str:
    """A regex (no groups) matching the token of any registered entry of ``kinds`` (implicit entries have none)."""
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    alternatives = []
    for kind in kinds:
        for name, entry in registry.entries(kind).items():
            if not entry.options.get("implicit"):
                alternatives.append(name + "".join(f"-{abbr}[0-9.]+" for abbr in entry.options.get("spelled", {}).values()))
    alternatives.sort(key=len, reverse=True)
    return f"(?:{'|'.join(alternatives)})(?:-{DIGEST})?" if alternatives else "(?!)"


def parse_part(kinds: str | tuple[str, ...], text: str, known: Mapping[str, Part] | None = None) -> Part:
    """A part's token back into a :class:`Part`; a settings hash is looked up in ``known`` ({token: Part})."""
    if known and text in known:
        return known[text]
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    head, *rest = text.split("-")
    entry = _entry(kinds, head)
    spelled = entry.options.get("spelled", {})
    params = {p.name: p for p in entry.params}
    digest = rest.pop() if rest and re.fullmatch(DIGEST, rest[-1]) else ""
    if len(rest) != len(spelled) or not all(r.startswith(a) for r, a in zip(rest, spelled.values())):
        raise ValueError(f"{text!r}: expected {entry.name}{''.join(f'-{a}<{p}>' for p, a in spelled.items())}[-p<hash>]")
    given = {p: params[p].type(r[len(a):]) for r, (p, a) in zip(rest, spelled.items())}
    return Part(entry.kind, entry.name, tuple(sorted(entry.changed(given).items())), digest[1:])


def known_parts(config: dict) -> dict[str, Part]:
    """{token: Part} of every criterion, solver, allocation and refinement the config's studies name (what a job
    reads to turn a settings hash in its path back into settings)."""
    out = {}
    for study in config.get("studies", {}).values():
        if study.get("kind") in (None, "unstructured", "recovery", "sensitivity"):
            for method in study_methods(study):
                out.update({p.token: p for p in (method.scorer, method.allocation, method.refinement) if p})
    return out


@dataclass(frozen=True)
class Method:
    scorer: Part  # the criterion or solver
    pattern: Pattern
    stream: str | None  # None where neither the scorer nor the refinement reads statistics
    allocation: Part | None = None  # None: uniform
    refinement: Part | None = None

    @property
    def criterion(self) -> str:
        return self.scorer.name

    @property
    def id(self) -> str:
        parts = [self.scorer.token, self.pattern.token]
        parts += [p.token for p in (self.allocation, self.refinement) if p]
        if self.stream:
            parts.append(STREAM_TOKENS[self.stream])
        return "-".join(parts)

    @property
    def needs_stats(self) -> bool:
        """The scorer or the refinement reads input statistics (so the variant has a stream)."""
        return any(p.entry.needs_calibration for p in (self.scorer, self.refinement) if p)

    @property
    def needs_calibration(self) -> bool:
        """Calibration samples shape the variant: statistics, or an allocation that reads them (OWL's outlier ratios)."""
        return self.needs_stats or bool(self.allocation and self.allocation.entry.needs_calibration)


def _part(kinds, spec) -> Part | None:
    if spec is None or isinstance(spec, Part):
        return spec
    part = Part.of(kinds, spec)
    return None if part.entry.options.get("implicit") else part


def make_method(criterion, pattern, stream: str = "sequential", allocation=None, refinement=None) -> Method:
    """``criterion``, ``allocation``, ``refinement``: Parts, names or config items ({name: ..., <parameter>: ...})."""
    scorer, refine = _part(SCORER_KINDS, criterion), _part("refinement", refinement)
    stats = any(p.entry.needs_calibration for p in (scorer, refine) if p)
    return Method(scorer, parse_pattern(pattern), stream if stats else None, _part("allocation", allocation), refine)


def method_id_regex(kinds: tuple[str, ...] = SCORER_KINDS, streams: str = "seq|dense|") -> str:
    """Method ids whose scorer is of ``kinds`` and whose stream token is one of ``streams`` ('' for none): the
    rules' wildcard constraints, read from the registry."""
    stream = "|".join(f"-{s}" if s else "" for s in streams.split("|"))
    return (rf"{part_regex(kinds)}-{PATTERN_TOKEN}(?:-{part_regex('allocation')})?(?:-{part_regex('refinement')})?"
            rf"(?:{stream})")


PATTERN_TOKEN = r"(?:u[0-9.]+|\d+of\d+)"


def parse_method_id(text: str, known: Mapping[str, Part] | None = None) -> Method:
    """A method id back into a :class:`Method`; settings hashes are looked up in ``known`` (:func:`known_parts`)."""
    groups = rf"({part_regex(SCORER_KINDS)})-({PATTERN_TOKEN})(?:-({part_regex('allocation')}))?" \
             rf"(?:-({part_regex('refinement')}))?(?:-(seq|dense))?"
    m = re.fullmatch(groups, text)
    if not m:
        raise ValueError(f"method id {text!r}: expected <criterion or solver>-<pattern>[-<allocation>][-<refinement>]"
                         f"[-seq|-dense], with criteria and solvers {', '.join(scorer_names())}")
    scorer, pattern, allocation, refinement, stream = m.groups()
    streams = {v: k for k, v in STREAM_TOKENS.items()}
    return make_method(parse_part(SCORER_KINDS, scorer, known), pattern, streams[stream] if stream else "sequential",
                       allocation and parse_part("allocation", allocation, known),
                       refinement and parse_part("refinement", refinement, known))


def scorer_names() -> list[str]:
    return [n for kind in SCORER_KINDS for n in registry.entries(kind)]


def pruned_variant(method: Method, calibration: dict) -> str:
    return f"pruned/{calib_id(calibration) if method.needs_calibration else 'none'}/{method.id}"


def allocation_artifact(method: Method, calib: str) -> str | None:
    """The per-block ratios of a method's allocation (under ``results/<model>/``); None for uniform."""
    if method.allocation is None:
        return None
    calib = calib if method.allocation.entry.needs_calibration else "none"
    return f"allocation/{calib}/{method.allocation.token}-{method.pattern.token}"


def parse_allocation_id(text: str, known: Mapping[str, Part] | None = None) -> tuple[Part, float]:
    """``owl-m5-l0.08-u0.7`` → (the OWL Part, 0.7)."""
    m = re.fullmatch(rf"({part_regex('allocation')})-u([0-9.]+)", text)
    if not m:
        raise ValueError(f"allocation id {text!r}: expected <allocation>-u<ratio>, allocations "
                         f"{', '.join(n for n, e in registry.entries('allocation').items() if not e.options.get('implicit'))}")
    return parse_part("allocation", m.group(1), known), float(m.group(2))


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def study_allocations(study: dict) -> list[Part | None]:
    """The allocations a study compares (None = uniform), in the order given. An allocation named alone takes the
    study keys its entry declares (``study_keys``, e.g. OWL's owl_m, owl_lambda: one value or a list to sweep)."""
    out: list[Part | None] = []
    for spec in _as_list(study.get("allocation", registry.implicit("allocation"))):
        name, given = spec_name(spec)
        keys = _entry(("allocation",), name).options.get("study_keys", {}) if name != registry.implicit("allocation") else {}
        sweeps = [[(param, v) for v in _as_list(study[key])] for key, param in keys.items() if key in study and param not in given]
        for combination in itertools.product(*sweeps):
            out.append(_part("allocation", {"name": name, **given, **dict(combination)}))
    return list(dict.fromkeys(out))


def study_refinements(study: dict) -> list[Part | None]:
    """The mask refinements a study compares (``refinements``: names or items; ``none`` for none), default none."""
    return list(dict.fromkeys(None if spec == "none" else _part("refinement", spec) for spec in _as_list(study.get("refinements", "none"))))


def study_methods(study: dict) -> list[Method]:
    stream = study.get("stream", "sequential")
    return [
        make_method(c, p, stream, a, r) for c in study["criteria"] for a in study_allocations(study)
        for r in study_refinements(study) for p in study["patterns"]
    ]


def study_variants(study: dict, calibration: dict) -> list[str]:
    """Variants a study compares, the dense model first; duplicates removed, order kept. With
    ``calibration_seeds`` each method once per calibration seed (the seeds' spread beside the rows)."""
    seeds = study.get("calibration_seeds", [calibration["seed"]])
    variants = ["dense"] + [pruned_variant(m, {**calibration, "seed": s}) for m in study_methods(study) for s in seeds]
    return list(dict.fromkeys(variants))


def ppl_name(perplexity: dict) -> str:
    """``ppl-<corpus>-l<seqlen>-w<windows>-bos<auto|true|false>.json`` (PruneFlow's protocol), or
    ``ppl-<corpus>-l<seqlen>-w<windows>-ref.json`` (the reference's, which has no ``bos`` setting)."""
    p = perplexity
    if p.get("protocol", "pruneflow") == "reference":
        return f"ppl-{p['corpus']}-l{p['seqlen']}-w{p['windows']}-{REFERENCE_TOKEN}.json"
    return f"ppl-{p['corpus']}-l{p['seqlen']}-w{p['windows']}-bos{str(p.get('bos', 'auto')).lower()}.json"


def parse_ppl_name(text: str) -> dict:
    """Inverse of :func:`ppl_name`: {corpus, seqlen, windows, bos} for PruneFlow's protocol (no ``protocol``
    key: the default's params stay as they were), {corpus, seqlen, windows, protocol: reference} for the reference."""
    m = re.fullmatch(r"ppl-(.+)-l(\d+)-w(\d+)-(?:bos(auto|true|false)|(ref))(?:\.json)?", text)
    if not m:
        raise ValueError(
            f"perplexity artifact {text!r}: expected ppl-<corpus>-l<seqlen>-w<windows>-bos<auto|true|false> or ...-ref"
        )
    spec = {"corpus": m.group(1), "seqlen": int(m.group(2)), "windows": int(m.group(3))}
    if m.group(5):
        return {**spec, "protocol": "reference"}
    return {**spec, "bos": {"auto": "auto", "true": True, "false": False}[m.group(4)]}


# Structured pruning (heads / FFN neurons removed, then repaired): variant
# ``structured/<calibration id or none>/<criterion>-<target><ratio>-<reconstruction>``,
# e.g. ``structured/brown-n64-l256-s0/fluctuation-neurons0.2-liarauto``. Criteria and repairs are registry entries
# (kinds structured_criterion and structured_repair); a repair's damping is spelled after its name: a number, or
# ``auto`` for the damping chosen per layer on a held-out slice of the calibration samples.
STRUCTURED_TARGETS = ("heads", "neurons", "both")
STRUCTURED_CRITERION, STRUCTURED_REPAIR = "structured_criterion", "structured_repair"  # the registry kinds
NO_REPAIR = "none"  # reconstruction none: the removed channels' weights dropped, no entry (as refinements' none)
DAMPING = "damping"  # a repair's one possible parameter: spelled in ids, swept by a study's ``damping`` key
DEFAULT_DAMPING = "auto"


def structured_criteria() -> dict[str, registry.Entry]:
    return registry.entries(STRUCTURED_CRITERION)


def structured_criterion(name: str) -> registry.Entry:
    """The entry of structured criterion ``name``; RegistryError naming it and the allowed ones."""
    return registry.get(STRUCTURED_CRITERION, name)


def structured_repairs() -> dict[str, registry.Entry]:
    """{name: entry} of the repairs; one whose parameters are other than ``damping`` could not be spelled in an id."""
    found = registry.entries(STRUCTURED_REPAIR)
    for name, entry in found.items():
        if name == NO_REPAIR or any(p.name != DAMPING for p in entry.params):
            raise registry.RegistryError(f"{STRUCTURED_REPAIR} {name!r} ({entry.implementation}): parameters "
                                         f"{[p.name for p in entry.params]}, name {name!r}; allowed: {DAMPING} or none, "
                                         f"any name but {NO_REPAIR!r}")
    return found


def structured_reconstructions() -> tuple[str, ...]:
    """What a structured study's ``reconstructions`` may name: none and every repair."""
    return (NO_REPAIR, *structured_repairs())


def repair_entry(name: str) -> registry.Entry | None:
    """The entry of repair ``name`` (None for none); ValueError naming it and the allowed ones."""
    if name == NO_REPAIR:
        return None
    if name not in (found := structured_repairs()):
        raise registry.RegistryError(f"unknown reconstruction {name!r}; allowed: {', '.join(structured_reconstructions())}")
    return found[name]


def is_damped(name: str) -> bool:
    """Whether repair ``name`` takes a damping (spelled in its id)."""
    entry = repair_entry(name)
    return entry is not None and DAMPING in entry.defaults


def damped_repairs() -> tuple[str, ...]:
    return tuple(n for n in structured_reconstructions() if is_damped(n))


@dataclass(frozen=True)
class StructuredMethod:
    criterion: str
    target: str
    ratio: float
    reconstruction: str
    damping: float | str = DEFAULT_DAMPING  # a ridge factor, or "auto"

    @property
    def needs_calibration(self) -> bool:
        repair = repair_entry(self.reconstruction)
        return structured_criterion(self.criterion).needs_calibration or bool(repair and repair.needs_calibration)

    @property
    def id(self) -> str:
        recon = self.reconstruction
        if is_damped(recon):
            recon += "auto" if self.damping == "auto" else f"{float(self.damping):g}"
        return f"{self.criterion}-{self.target}{self.ratio:g}-{recon}"


def _split_repair(token: str) -> tuple[str | None, str]:
    """(reconstruction, what follows its name) of an id's last part (``liar_weight0.3`` → liar_weight, 0.3): the
    longest name that starts it, or (None, token)."""
    name = next((n for n in sorted(structured_reconstructions(), key=len, reverse=True) if token.startswith(n)), None)
    return name, token[len(name):] if name else token


_STRUCTURED_ID = re.compile(rf"([a-z][a-z0-9_]*)-({'|'.join(STRUCTURED_TARGETS)})([0-9.]+)-([a-z].*)")


def structured_repair_of(method_id: str) -> str | None:
    """The reconstruction a structured method id names (its damping spelled or not), None if it is no structured id."""
    m = _STRUCTURED_ID.fullmatch(method_id)
    return _split_repair(m.group(4))[0] if m else None


def parse_structured_id(text: str) -> StructuredMethod:
    m = _STRUCTURED_ID.fullmatch(text)
    recon, spelled = _split_repair(m.group(4)) if m else (None, "")
    if recon is None or is_damped(recon) != bool(spelled) or not re.fullmatch(r"auto|[0-9.e-]*", spelled):
        forms = "|".join(n + "<damping>" * is_damped(n) for n in structured_reconstructions())
        raise ValueError(f"structured method id {text!r}: expected <criterion>-<target><ratio>-<{forms}> (damping: a number or auto)")
    damping = DEFAULT_DAMPING if spelled in ("", "auto") else float(spelled)
    return StructuredMethod(m.group(1), m.group(2), float(m.group(3)), recon, damping)


def parse_structured_reconstruction(text, default_damping=DEFAULT_DAMPING) -> tuple[str, float | str]:
    """``"liar"`` → ("liar", the study's damping); ``"liar:0"`` → ("liar", 0.0); ``"liar_weight:auto"``;
    ``"bias"`` → ("bias", the study's damping, unused). Errors name the value and what is allowed."""
    name, _, damping = str(text).partition(":")
    if name not in structured_reconstructions() or (damping and not is_damped(name)):
        damped = damped_repairs()
        how = f"; {' and '.join(damped)} may name their damping after a colon ({damped[0]}:0, {damped[0]}:0.3, {damped[0]}:auto)" if damped else ""
        raise ValueError(f"reconstruction {text!r}: allowed {', '.join(structured_reconstructions())}{how}")
    if not damping:
        return name, default_damping
    param = next(p for p in repair_entry(name).params if p.name == DAMPING)
    try:
        value = param.check(damping if damping in param.words else float(damping))
    except ValueError:
        raise ValueError(f"reconstruction {text!r}: damping {damping!r} is not allowed; allowed: {param.allowed}") from None
    return name, value


def study_dampings(study: dict) -> list:
    """The study's ``damping``: one value (a number or "auto") or a list of them; default auto."""
    value = study.get("damping", DEFAULT_DAMPING)
    return list(value) if isinstance(value, list) else [value]


def structured_methods(study: dict) -> list[StructuredMethod]:
    out = []
    for crit in study["criteria"]:
        for target in study.get("targets", ["neurons"]):
            for ratio in study["ratios"]:
                for spec in study["reconstructions"]:
                    explicit = ":" in str(spec)
                    for damping in study_dampings(study):
                        recon, value = parse_structured_reconstruction(spec, damping)
                        if not is_damped(recon):
                            value = DEFAULT_DAMPING
                        out.append(StructuredMethod(crit, target, float(ratio), recon, value if value == "auto" else float(value)))
                        if explicit or not is_damped(recon):
                            break  # one variant, whatever the study's dampings
    return list(dict.fromkeys(out))


def structured_variants(study: dict, calibration: dict) -> list[str]:
    out = ["dense"]
    for method in structured_methods(study):
        calib = calib_id(calibration) if method.needs_calibration else "none"
        out.append(f"structured/{calib}/{method.id}")
    return list(dict.fromkeys(out))


# Recovery after pruning: layer-wise reconstruction (Free Lunch) or parameter-efficient retraining
# (PERP), applied to a pruned variant. Spelled in the config as
#   none | <retraining>:<subsets and/or adapter joined by +> | recon:<granularity>[:<inputs>[:<trainable>]][:<order>]
# e.g. retrain:norms, retrain:norms+masklora, recon:sublayer, recon:matrix:dense, recon:block:pruned:norms,
# recon:sublayer:dense:interleaved. Granularities and retrainings are registry entries (spec/recovery.py says what
# one declares). Order ``after`` (default): the pruned variant's masks are kept and the whole model is reconstructed
# afterwards; ``interleaved`` (the Free Lunch reference code): block by block, prune with statistics from the pruned
# and reconstructed stream, then reconstruct, so the masks are the job's own.
# Variant: recovered/<prune calib>/<method id>/<calib id>/<recovery id>; the recovery id ends in a short
# hash of the effective optimiser settings, so changing one (the learning rate, say) gives a new path
# and switching it back costs nothing; the table spells the settings out.
RECON_INPUTS = ("pruned", "dense")
RECON_TARGETS = ("same", "dense")
SUBSET_NAMES = ("biases", "norms", "lm_head", "embeddings", "full")
ADAPTER_NAMES = ("lora", "masklora", "scalelora")
ORDERS = ("after", "interleaved")


@dataclass(frozen=True)
class Recovery:
    mode: str  # recon, or a retraining's name (retrain)
    granularity: str = ""  # recon only: as spelled, with its parameters (blocks:2)
    inputs: str = "pruned"  # recon only
    trainable: str = "all"  # subsets and adapter joined by +, or "all" (recon: every weight of the unit)
    order: str = "after"  # recon only: after (masks of the pruned variant) | interleaved (prune, reconstruct per block)

    @property
    def entry(self):
        """Its registry entry: the granularity's (recon) or the retraining's."""
        if self.mode == RECON:
            return granularity_entry(self.granularity)[0]
        return registry.get(RETRAINING, self.mode)

    @property
    def params(self) -> dict:
        """The granularity's parameters ({"k": 2} for blocks:2); a retraining has none."""
        return granularity_entry(self.granularity)[1] if self.mode == RECON else {}

    @property
    def is_reconstruction(self) -> bool:
        return self.mode == RECON

    @property
    def interleaved(self) -> bool:
        return self.order == "interleaved"

    @property
    def whole_model(self) -> bool:
        """Trains on the next-token loss of the whole model (retraining, recon:full): no dense targets."""
        return self.entry.options["whole_model"]

    @property
    def trains_every_weight(self) -> bool:
        """Trains every weight at once (recon:full, retrain:...+full): float32 throughout, memory of the whole model."""
        return self.entry.options["every_weight"] or (self.whole_model and "full" in self.trainable.split("+"))

    @property
    def memory_kind(self) -> str:
        """Its jobs' kind in the memory formulas (spec/resources.py): its entry's, for its trainable set."""
        return memory_kind(self.entry, self.trainable)

    @property
    def spec(self) -> str:
        if not self.is_reconstruction:
            return f"{self.mode}:{self.trainable}"
        base = f"{RECON}:{self.granularity}:{self.inputs}:{self.trainable}"
        return base + (":interleaved" if self.interleaved else "")

    def token(self, settings: dict) -> str:
        import hashlib
        import json

        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        what = self.trainable if not self.is_reconstruction else f"{self.granularity.replace(':', '')}-{self.inputs}-{self.trainable}"
        if self.interleaved:
            what += "-interleaved"
        return f"{self.mode}-{what}-{digest}"


def recovery_id_pattern() -> str:
    """A recovery id, as a rule's wildcard constraint: a reconstruction's or a registered retraining's."""
    return f"(?:{'|'.join([RECON, *retrainings()])})-[^/]+"


def parse_recovery_id(text: str) -> Recovery:
    """``recon-blocks2-pruned-norms+masklora-1a2b3c4d`` → its :class:`Recovery` (the settings hash dropped);
    the inverse of :meth:`Recovery.token`."""
    m = re.fullmatch(r"([a-z_]+)-(.+?)(-interleaved)?-([0-9a-f]{8})", text)
    if m and m.group(1) == RECON and m.group(2).count("-") >= 2:
        granularity, inputs, trainable = m.group(2).rsplit("-", 2)
        order = "interleaved" if m.group(3) else "after"
        return Recovery(RECON, granularity_from_token(granularity), inputs, trainable, order)
    if m and m.group(1) in retrainings() and not m.group(3):
        return Recovery(m.group(1), trainable=m.group(2))
    raise ValueError(f"recovery id {text!r}: expected {RECON}-<granularity>-<inputs>-<trainable>[-interleaved]-<hash> "
                     f"or <{'|'.join(retrainings())}>-<trainable>-<hash>")


def parse_recovery(text: str) -> Recovery | None:
    """``none`` → None; otherwise a :class:`Recovery`; errors name the value and what is allowed."""
    text = str(text).strip()
    if text == "none":
        return None
    mode, _, rest = text.partition(":")
    if mode in retrainings():
        return Recovery(mode, trainable=_check_trainable(text, rest, allow_all=False))
    if mode == RECON:
        parts = rest.split(":")
        orders = [p for p in parts[1:] if p in ORDERS]
        if len(orders) > 1 or (orders and parts[-1] not in ORDERS):
            raise ValueError(f"recovery {text!r}: the order ({' or '.join(ORDERS)}) comes once, last")
        parts = [p for p in parts if p not in ORDERS] if orders else parts
        found = split_granularity(parts)
        if found is None:
            raise ValueError(f"recovery {text!r}: granularity {parts[0]!r} is not allowed; allowed: {allowed_granularities()}")
        gran, parts = found[0], [None, *found[1]]
        inputs = parts[1] if len(parts) > 1 else "pruned"
        if inputs not in RECON_INPUTS:
            raise ValueError(f"recovery {text!r}: inputs {inputs!r} is not allowed; allowed: pruned, dense (then an order: {', '.join(ORDERS)})")
        trainable = _check_trainable(text, parts[2], allow_all=True) if len(parts) > 2 else "all"
        if len(parts) > 3:
            raise ValueError(f"recovery {text!r}: too many parts; allowed: recon:<granularity>[:<inputs>[:<trainable>]][:{'|'.join(ORDERS)}]")
        order = orders[0] if orders else "after"
        if order == "interleaved" and granularity_entry(gran)[0].options["whole_model"]:
            raise ValueError(f"recovery {text!r}: granularity {gran} trains the whole model at once, so it cannot be interleaved "
                             f"with pruning block by block; allowed: {allowed_granularities(whole_model=False)}")
        return Recovery(RECON, gran, inputs, trainable, order)
    retrain = ", ".join(f"{name}:<subsets/adapter>" for name in retrainings())
    raise ValueError(f"recovery {text!r}: allowed: none, {retrain}, recon:<granularity>[:<inputs>[:<trainable>]][:<order>]")


def _check_trainable(text: str, value: str, allow_all: bool) -> str:
    if allow_all and value == "all":
        return "all"
    items = [i for i in value.split("+") if i]
    allowed = SUBSET_NAMES + ADAPTER_NAMES
    bad = [i for i in items if i not in allowed]
    if not items or bad or sum(i in ADAPTER_NAMES for i in items) > 1:
        raise ValueError(
            f"recovery {text!r}: trainable {value!r} is not allowed; allowed: subsets {', '.join(SUBSET_NAMES)} "
            f"and at most one adapter ({', '.join(ADAPTER_NAMES)}), joined by +" + (", or all" if allow_all else "")
        )
    return "+".join(items)


def recovery_settings(recovery: Recovery, config: dict) -> dict:
    """The settings of the config's reconstruction/retraining section that this recovery reads (its entry's keys,
    an adapter's where one trains)."""
    entry = recovery.entry
    keys = entry.options["settings"]
    if any(item in ADAPTER_NAMES for item in recovery.trainable.split("+")):
        keys += ADAPTER_KEYS
    section = config.get(entry.kind, {})  # the config's sections are named as the kinds: reconstruction, retraining
    return {"recovery": recovery.spec, **{k: v for k, v in section.items() if k in keys}}


def recovery_variants(study: dict, config: dict) -> list[str]:
    """Dense, then for every pruned variant of the study: itself ('none') or its recovered versions."""
    calibration = config["calibration"]
    out = ["dense"]
    for method in study_methods(study):
        pruned = pruned_variant(method, calibration)
        for spec in study["recoveries"]:
            rec = parse_recovery(spec)
            out.append(pruned if rec is None else f"recovered/{pruned.split('/', 1)[1]}/{calib_id(calibration)}/{rec.token(recovery_settings(rec, config))}")
    return list(dict.fromkeys(out))


def variant_parent(variant: str) -> str | None:
    """The variant a compact variant is stored as changes to: ``pruned/...`` and ``structured/...`` →
    ``dense``, ``recovered/<calib>/<method>/...`` → ``pruned/<calib>/<method>``; the dense model has none."""
    kind, *rest = variant.split("/")
    if kind in ("pruned", "structured"):
        return "dense"
    if kind == "recovered":
        # An interleaved recovery prunes as it goes: its masks are its own, its parent the dense model.
        return "dense" if is_interleaved(variant) else f"pruned/{rest[0]}/{rest[1]}"
    return None  # dense


def is_interleaved(variant: str) -> bool:
    """A recovered variant pruned and reconstructed block by block in one job (order interleaved)."""
    return variant.startswith("recovered/") and "-interleaved-" in variant.rsplit("/", 1)[-1]


def variant_lineage(variant: str) -> list[str]:
    """The variant, its parent, the parent's parent, ... down to a variant stored whole."""
    chain = [variant]
    while (parent := variant_parent(chain[-1])) is not None:
        chain.append(parent)
    return chain


def making_steps(variant: str) -> dict[str, list[str]]:
    """Artifacts (under ``results/<model>/``) whose jobs made ``variant`` from the dense model, by cost
    column: ``prune`` (shared steps included: a dense-stream variant also pays its activation cache, an
    OWL variant the cache and its allocation) and ``recover``. Their Snakemake benchmark files give the
    costs in the tables."""
    kind, *rest = variant.split("/")
    if kind == "recovered" and is_interleaved(variant):  # one job pruned and reconstructed it
        return {"prune": [], "recover": [variant]}
    if kind == "recovered":
        return {"prune": making_steps(variant_parent(variant))["prune"], "recover": [variant]}
    if kind == "pruned":
        method = parse_method_id(rest[1])
        reads_cache = method.stream == "dense" or (method.allocation and method.allocation.entry.needs_calibration)
        shared = [f"acts/{rest[0]}"] if reads_cache else []
        shared += [a] if (a := allocation_artifact(method, rest[0])) else []
        return {"prune": [*shared, variant], "recover": []}
    if kind == "structured":
        return {"prune": [variant], "recover": []}
    return {"prune": [], "recover": []}


# Per-block sensitivity (optional study kind ``sensitivity``): for every block alone, prune it at the
# pattern from the dense model and score perplexity on the first ``windows`` windows of the perplexity
# protocol; one job per criterion and pattern, one JSON:
# ``sensitivity/<calib|none>/<criterion>-<pattern>/ppl-<corpus>-l<seqlen>-w<windows>-bos<bos>.json``.
SENSITIVITY_WINDOWS = 4


def sensitivity_artifacts(study: dict, config: dict) -> list[str]:
    """What a sensitivity study reads (under ``results/<model>/``), one per criterion × pattern."""
    ppl = ppl_name({**config["perplexity"], "windows": study.get("windows", SENSITIVITY_WINDOWS)})
    out = []
    for method in (make_method(c, p, "dense") for c in study["criteria"] for p in study["patterns"]):
        calib = calib_id(config["calibration"]) if method.needs_calibration else "none"
        out.append(f"sensitivity/{calib}/{method.scorer.token}-{method.pattern.token}/{ppl}")
    return list(dict.fromkeys(out))


def variants_of(study: dict, config: dict) -> list[str]:
    """The variants any study compares (dense first); a sensitivity study compares none but the dense model."""
    if study.get("kind") == "sensitivity":
        return ["dense"]
    if study.get("kind") == "structured":
        return structured_variants(study, config["calibration"])
    if study.get("kind") == "recovery":
        return recovery_variants(study, config)
    return study_variants(study, config["calibration"])
