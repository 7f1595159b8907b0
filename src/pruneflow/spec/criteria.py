"""A criterion or solver as pruning applies it: its registry entry, its settings and an optional mask refinement
(no torch here: the workflow imports this to build its DAG; the entries' code is imported when a score is asked)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pruneflow.spec import registry

SCORER_KINDS = ("criterion", "solver")


class CriterionError(ValueError):
    pass


@dataclass(frozen=True)
class Criterion:
    entry: registry.Entry  # a criterion (scores, then masks) or a solver (chooses and updates weights together)
    params: tuple = ()  # every hyperparameter, (name, value) sorted
    refinement: Criterion | None = None  # a refinement entry applied to the mask, with its params

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def settings(self) -> dict:
        return dict(self.params)

    @property
    def is_solver(self) -> bool:
        return self.entry.kind == "solver"

    @property
    def needs(self) -> frozenset[str]:
        return self.entry.needs | (self.refinement.needs if self.refinement else frozenset())

    @property
    def needs_calibration(self) -> bool:
        return bool(self.needs)

    @property
    def needs_gram(self) -> bool:
        return "gram" in self.needs

    @property
    def per_row(self) -> bool:
        """Scores compared within each output row (else across the whole matrix)."""
        return bool(self.entry.options.get("per_row", False))

    @property
    def permutation(self) -> str:
        """How its N:M groups are formed (spec/patterns.py PERMUTATIONS): the value of the parameter its entry names in
        option ``nm_permutation``; none where it has none."""
        param = self.entry.options.get("nm_permutation")
        return self.settings[param] if param else "none"

    @property
    def score_settings(self) -> dict:
        """The settings its scores read: all but the permutation's, which orders the mask's groups, not the scores."""
        return {k: v for k, v in self.params if k != self.entry.options.get("nm_permutation")}

    def permutation_problem(self, pattern) -> str | None:
        """Why its channel permutation cannot apply with ``pattern`` (and its refinement), or None."""
        if self.permutation == "none":
            return None
        param = self.entry.options["nm_permutation"]
        if not pattern.is_nm:
            return (f"{param} = {self.permutation!r} forms N:M groups over a channel permutation, and an unstructured mask "
                    f"({pattern.token}) does not depend on the channel order; allowed: N:M patterns such as 2:4, or {param}: none")
        if self.refinement is not None:
            return (f"{param} = {self.permutation!r} with refinement {self.refinement.name!r}: a refinement edits the mask in "
                    f"the layer's own channel order and would break the permuted N:M groups; allowed: no refinement, or {param}: none")
        return None

    @cached_property
    def implementation(self):
        return self.entry.load()


def scorers() -> dict[str, registry.Entry]:
    """Every criterion and solver by name."""
    return {name: e for kind in SCORER_KINDS for name, e in registry.entries(kind).items()}


def get_criterion(name: str, settings: dict | None = None, refinement: tuple[str, dict] | None = None) -> Criterion:
    """The criterion or solver ``name`` with ``settings`` (defaults filled, each checked) and an optional refinement
    (name, settings); errors name the value and what is allowed."""
    found = scorers()
    if name not in found:
        raise CriterionError(f"unknown pruning criterion {name!r}; allowed: {', '.join(found)}")
    entry = found[name]
    refine = None
    if refinement:
        r = registry.get("refinement", refinement[0])
        refine = Criterion(r, tuple(sorted(r.settings(refinement[1]).items())))
    return Criterion(entry, tuple(sorted(entry.settings(settings).items())), refine)


def method_criterion(method) -> Criterion:
    """The criterion of a :class:`~pruneflow.spec.naming.Method`, with its settings and refinement."""
    refine = method.refinement
    return get_criterion(method.criterion, method.scorer.settings, refine and (refine.name, refine.settings))
