"""One registry per kind of method (no torch here: the workflow imports this to build its DAG).

An :class:`Entry` declares a method: its kind and name, where its code lives (imported only by the jobs that run
it), what statistics it needs, its hyperparameters with their schema, its memory term and a line for the docs.
Built-in entries are declared in their methods' own modules (listed in ``BUILTIN_MODULES``); a package installed
beside PruneFlow adds entries through the entry point group ``pruneflow.methods`` (an Entry or a list of them).
Rules, naming, resources, preflight, tables and docs read the registry, never a method's name.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

NEEDS = ("calibration", "input_norms", "gram", "channel_means", "gradients")
KINDS = ("criterion", "solver", "refinement", "allocation", "reconstruction", "retraining", "structured_repair")
ENTRY_POINT_GROUP = "pruneflow.methods"
# Modules whose import registers the built-in entries (each holds ``ENTRY = register(Entry(...))``; torch-free at import).
BUILTIN_MODULES = (
    "pruneflow.methods.magnitude",
    "pruneflow.methods.wanda",
    "pruneflow.methods.sparsegpt",
    "pruneflow.methods.uniform",
    "pruneflow.methods.owl",
    "pruneflow.prune.dsnot",
    "pruneflow.prune.alps",
    "pruneflow.prune.alphapruning",
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

    def check(self, value) -> object:
        """``value`` as this parameter's type; ValueError naming the value and what is allowed."""
        ok = isinstance(value, self.type) and not (isinstance(value, bool) and self.type is not bool)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True  # YAML's 1 for 1.0
        if not ok:
            raise ValueError(f"{self.name} = {value!r}: expected a {self.type.__name__}; allowed: {self.allowed}")
        too_low = self.minimum is not None and value < self.minimum
        too_high = self.maximum is not None and value > self.maximum
        if too_low or too_high or (self.choices and value not in self.choices):
            raise ValueError(f"{self.name} = {value!r} is not allowed; allowed: {self.allowed}")
        return value

    @property
    def allowed(self) -> str:
        """What :meth:`check` accepts, in words (also the docs' column)."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        low = "" if self.minimum is None else f"{self.minimum:g} ≤ "
        high = "" if self.maximum is None else f" ≤ {self.maximum:g}"
        return f"{low}{self.type.__name__}{high}"


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
    """{name: Entry} of one kind, built-ins and plugins, in registration order."""
    if kind not in KINDS:
        raise RegistryError(f"kind {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    _ensure_loaded()
    return dict(_REGISTRY[kind])


def get(kind: str, name: str) -> Entry:
    found = entries(kind)
    if name not in found:
        raise RegistryError(f"unknown {kind} {name!r}; allowed: {', '.join(found) or 'none'}")
    return found[name]


def find(name: str, kinds: tuple[str, ...] = KINDS) -> Entry | None:
    """The entry called ``name`` among ``kinds`` (first match), or None."""
    return next((entries(k)[name] for k in kinds if name in entries(k)), None)
