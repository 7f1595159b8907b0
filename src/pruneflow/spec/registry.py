"""One registry per kind of method (no torch here: the workflow imports this to build its DAG).

An :class:`Entry` declares a method: its kind and name, where its code lives (imported only by the jobs that run
it), what statistics it needs, its hyperparameters with their schema, its memory term and a line for the docs.
Built-in entries are declared in their methods' own modules (listed in ``BUILTIN_MODULES``); a package installed
beside PruneFlow adds entries through the entry point group ``pruneflow.methods`` (an Entry or a list of them).
Rules, naming, resources, preflight, tables and docs read the registry, never a method's name.

What each kind's implementation is (docs/add-a-method.md) and the options it may set:
- criterion: ``scores(weight, stats, **params) -> [out, in]`` (higher = kept); options ``per_row``, ``nm_permutation``
  (the name of its parameter, with choices ``PERMUTATIONS`` of spec/patterns.py and default none, that forms N:M
  groups over a channel permutation, prune/permutation.py; the scores do not read it).
- solver: a :class:`Solver` (``prepare(gram, weight, **params) -> state``, ``solve(weight, state, pattern, **params)
  -> keep``, the weight updated in place); needs ``gram``.
- refinement: ``refine(weight, keep, stats, pattern, **params) -> keep`` (after a criterion's or solver's mask).
- allocation: ``allocate(model, cache, sparsity, sizes, **params) -> {"block_sparsities": [...], ...}``; options
  ``implicit`` (the default, no token in ids: uniform), ``spelled`` ({parameter: letter} written into the id instead
  of a hash), ``study_keys`` ({study key: parameter}, swept by a study), ``check(settings, sparsity) -> (parameter,
  why) | None``.
- structured_criterion: ``scores(units, stats, **params) -> [units]`` float64 (the lowest are removed), ``units`` a
  :class:`pruneflow.structured.prune.Units`, ``stats`` its output projection's input ``ChannelStats`` (None where the
  entry needs nothing). Its names are a structured study's, so they may repeat an unstructured criterion's.
- structured_repair: ``fit(stats, keep, removed, *, consume, **params) -> (B [k, r] | None, c [r] | None)`` with
  x_R ≈ Bᵀ x_K + c; the output projection becomes W_K + W_R Bᵀ, its bias b + W_R c. Its one parameter, if any, is
  ``damping`` (spelled after the name in ids: ``liar0.3``, ``liarauto``); option ``grid``: the values damping
  ``auto`` chooses from per layer on held-out calibration samples. Reconstruction ``none`` is no entry: no repair.
- reconstruction, retraining: declared through :func:`pruneflow.spec.recovery.recovery_entry`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from pruneflow.spec.patterns import PERMUTATIONS

NEEDS = ("calibration", "input_norms", "gram", "channel_means", "channel_variance", "gradients")
KINDS = ("criterion", "solver", "refinement", "allocation", "reconstruction", "retraining", "structured_criterion", "structured_repair")
PRUNING_KINDS = ("criterion", "solver", "refinement", "allocation")  # the kinds a pruned variant's method id names
ENTRY_POINT_GROUP = "pruneflow.methods"
# Modules whose import registers the built-in entries (each holds ``ENTRY = register(Entry(...))``; torch-free at import).
BUILTIN_MODULES = (
    "pruneflow.methods.magnitude",
    "pruneflow.methods.wanda",
    "pruneflow.methods.ria",
    "pruneflow.methods.sparsegpt",
    "pruneflow.methods.uniform",
    "pruneflow.methods.owl",
    "pruneflow.methods.recon_matrix",
    "pruneflow.methods.recon_matrix_adam",
    "pruneflow.methods.recon_sublayer",
    "pruneflow.methods.recon_blocks",
    "pruneflow.methods.recon_full",
    "pruneflow.methods.retrain",
    "pruneflow.methods.dsnot",
    "pruneflow.methods.alps",
    "pruneflow.methods.alphapruning",
    "pruneflow.methods.unit_magnitude",
    "pruneflow.methods.wanda_sp",
    "pruneflow.methods.fluctuation",
    "pruneflow.methods.bias_compensation",
    "pruneflow.methods.liar",
)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_IMPLEMENTATION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class RegistryError(ValueError):
    pass


class Solver(NamedTuple):
    """A solver's implementation: ``prepare(gram, weight, **params) -> state`` (shared by the linears that read one
    input; it may overwrite ``gram``), then ``solve(weight, state, pattern, **params) -> keep`` [out, in] bool,
    updating ``weight`` in place."""

    prepare: Callable
    solve: Callable


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its default, type and allowed values (``minimum``/``maximum`` inclusive, or ``choices``)."""

    name: str
    default: object
    type: type = float
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    doc: str = ""
    exclusive_minimum: bool = False  # the minimum itself is not allowed
    words: tuple[str, ...] = ()  # strings allowed besides the typed values (LIAR's damping "auto")

    def check(self, value) -> object:
        """``value`` as this parameter's type (or one of ``words``); ValueError naming the value and what is allowed."""
        if isinstance(value, str) and value in self.words:
            return value
        ok = isinstance(value, self.type) and not (isinstance(value, bool) and self.type is not bool)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True  # YAML's 1 for 1.0
        if not ok:
            raise ValueError(f"{self.name} = {value!r} is not allowed; allowed: {self.allowed}")
        low = self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum)
        high = self.maximum is not None and value > self.maximum
        if low or high or (self.choices and value not in self.choices):
            raise ValueError(f"{self.name} = {value!r} is not allowed; allowed: {self.allowed}")
        return value

    @property
    def allowed(self) -> str:
        """What :meth:`check` accepts, in words (also the docs' column): "a number >= 0 and <= 1", "one of a, b"."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        what = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(self.type, self.type.__name__)
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return " or ".join([" ".join([what, " and ".join(bounds)]).strip(), *self.words])


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str  # lowercase [a-z][a-z0-9_]*: method ids join their parts with '-'
    implementation: str  # "package.module:attribute", imported by the jobs that run it
    needs: frozenset[str] = frozenset()
    params: tuple[Param, ...] = ()
    memory: Callable[[dict], float] | None = field(default=None, compare=False)  # extra bytes from a shape dict
    doc: str = ""  # one line for the docs' tables
    options: Mapping = field(default_factory=dict, compare=False, hash=False)  # kind-specific flags (per_row, ...)

    def __post_init__(self):
        where = f"method entry {self.kind}/{self.name}"
        if self.kind not in KINDS:
            raise RegistryError(f"{where}: kind {self.kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise RegistryError(f"{where}: name {self.name!r} is not allowed; allowed: lowercase [a-z][a-z0-9_]* (no '-')")
        if not isinstance(self.implementation, str) or not _IMPLEMENTATION.fullmatch(self.implementation):
            raise RegistryError(f"{where}: implementation {self.implementation!r}: expected 'package.module:attribute'")
        object.__setattr__(self, "needs", frozenset(self.needs))
        if bad := sorted(self.needs - set(NEEDS)):
            raise RegistryError(f"{where}: needs {', '.join(map(repr, bad))} not allowed; allowed: {', '.join(NEEDS)}")
        object.__setattr__(self, "params", tuple(self.params))
        names = [p.name for p in self.params]
        if not all(isinstance(p, Param) for p in self.params) or len(set(names)) != len(names):
            raise RegistryError(f"{where}: params must be Param objects with distinct names, got {names}")
        for p in self.params:
            if not _NAME.fullmatch(p.name):
                raise RegistryError(f"{where}: parameter name {p.name!r} is not allowed; allowed: lowercase [a-z][a-z0-9_]*")
            try:
                p.check(p.default)
            except ValueError as err:
                raise RegistryError(f"{where}: the default fails its own schema: {err}") from None
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if "nm_permutation" in self.options:
            by_name = {p.name: p for p in self.params}
            param = by_name.get(self.options["nm_permutation"])
            if self.kind != "criterion" or param is None or param.default != "none" or set(param.choices) != set(PERMUTATIONS):
                raise RegistryError(f"{where}: option nm_permutation = {self.options['nm_permutation']!r}: allowed: on a criterion, "
                                    f"the name of one of its parameters with default 'none' and choices {', '.join(PERMUTATIONS)}")

    @property
    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    @property
    def needs_calibration(self) -> bool:
        return bool(self.needs)

    def settings(self, given: Mapping | None = None) -> dict:
        """The hyperparameters: ``given`` checked, defaults filled; errors name the value and what is allowed."""
        given = dict(given or {})
        by_name = {p.name: p for p in self.params}
        if unknown := sorted(set(given) - set(by_name)):
            raise RegistryError(f"{self.kind} {self.name!r}: unknown parameter {', '.join(map(repr, unknown))}; "
                                f"allowed: {', '.join(by_name) or 'none'}")
        out = {}
        for name, param in by_name.items():
            try:
                out[name] = param.check(given[name]) if name in given else param.default
            except ValueError as err:
                raise RegistryError(f"{self.kind} {self.name!r}: {err}") from None
        return out

    def changed(self, settings: Mapping) -> dict:
        """The settings that differ from their defaults (what a variant's name must record)."""
        return {k: v for k, v in self.settings(settings).items() if v != self.defaults[k]}

    def load(self):
        """The implementation (a module attribute), imported now."""
        module, _, attribute = self.implementation.partition(":")
        target = importlib.import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target


_REGISTRY: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_loaded = False


def register(entry: Entry) -> Entry:
    """Add ``entry`` to its kind's registry (again from the same implementation: replaced, e.g. a reloaded module)."""
    if not isinstance(entry, Entry):
        raise RegistryError(f"register: expected a pruneflow.spec.registry.Entry, got {entry!r}")
    old = _REGISTRY[entry.kind].get(entry.name)
    if old is not None and old.implementation != entry.implementation:
        raise RegistryError(f"{entry.kind} {entry.name!r} is registered twice: by {old.implementation} and by {entry.implementation}")
    if entry.kind in PRUNING_KINDS:  # side by side in a method id, so one name means one thing
        other = next((k for k in PRUNING_KINDS if k != entry.kind and entry.name in _REGISTRY[k]), None)
        if other:
            raise RegistryError(f"{entry.kind} {entry.name!r}: the name is taken by a {other} ({_REGISTRY[other][entry.name].implementation})")
    if re.fullmatch(r"p[0-9a-f]{8}", entry.name):
        raise RegistryError(f"{entry.kind} {entry.name!r}: the name reads as a settings hash (p and 8 hex digits); choose another")
    _REGISTRY[entry.kind][entry.name] = entry
    return entry


def load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_plugins() -> None:
    """Entries of installed packages (entry point group ``pruneflow.methods``), validated like the built-ins."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = point.load()
        except Exception as err:  # a broken plugin is named, not a bare traceback from deep inside the DAG
            raise RegistryError(f"plugin {point.name!r} ({point.value}) of group {ENTRY_POINT_GROUP} failed to load: {err}") from err
        for entry in found if isinstance(found, (list, tuple)) else [found]:
            if not isinstance(entry, Entry):
                raise RegistryError(f"plugin {point.name!r} ({point.value}): expected an Entry or a list of them, got {entry!r}")
            register(entry)


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        load_builtins()
        load_plugins()


def entries(kind: str) -> dict[str, Entry]:
    """{name: Entry} of one kind: the built-ins in the order of BUILTIN_MODULES, then plugins as registered."""
    if kind not in KINDS:
        raise RegistryError(f"kind {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    _ensure_loaded()

    def rank(entry: Entry) -> int:
        module = entry.implementation.partition(":")[0]
        return BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)

    return {e.name: e for e in sorted(_REGISTRY[kind].values(), key=rank)}


def get(kind: str, name: str) -> Entry:
    found = entries(kind)
    if name not in found:
        raise RegistryError(f"unknown {kind} {name!r}; allowed: {', '.join(found) or 'none'}")
    return found[name]


def implicit(kind: str) -> str | None:
    """The entry of ``kind`` marked ``implicit`` (the uniform allocation: no token in ids, the config's default)."""
    return next((n for n, e in entries(kind).items() if e.options.get("implicit")), None)


def find(name: str, kinds: tuple[str, ...] = KINDS) -> Entry | None:
    """The entry called ``name`` among ``kinds`` (first match), or None."""
    return next((entries(k)[name] for k in kinds if name in entries(k)), None)
