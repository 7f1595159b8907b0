"""The claims ledger: each paper's key claims as comparisons over rows of the study tables.

``claims.yaml`` (at the workflow's root) states every claim once::

    claims:
      - id: wanda-beats-magnitude-50
        paper: Wanda
        claim: Wanda prunes far better than magnitude at 50% unstructured sparsity.
        source: Wanda paper, Table 3 (LLaMA-7B 7.26 vs 17.29)
        compare:                       # a chain: each term against the next
          - {table: wanda_table, method: wanda, pattern: "0.5"}
          - {table: wanda_table, method: magnitude, pattern: "0.5"}
        holds_if: "<"                  # <, >, or ~ (equal within tolerance)
        tolerance: 0.05                # optional, relative (< allows a <= b·(1 + tolerance))
        column: perplexity             # optional (default perplexity)

A term is a row selector (``table`` and column values that pick exactly one row), a list of selectors
(each of them must satisfy the relation: "every granularity < none"), or ``{ratio_of: [selector,
selector]}`` (the first row's value over the second's: "the gap between two methods shrinks").

After the tables, :func:`evaluate` gives every claim an outcome, **holds**, **does not hold**, **within
noise** or **not run** (a table or row the configuration did not make), with the numbers, the tightest
margin and, where ``bench/results/noise_band.json`` measured one for a row (same model and calibration),
its band: the spread over calibration seeds, float order (threads, sample order, batch size, CPU kernels,
float64) and the reference implementations' results.
A claim whose numbers sit closer to its threshold than that band is *within noise*: another seed or
machine could flip it, so the ledger states neither outcome (``measured`` keeps what the numbers say).
A claim over zero-shot columns whose rows scored an lm-eval task on part of its items (``zeroshot.limit``) says
so in ``limited`` (``wanda 0.5: hellaswag 50/10042``): lm-eval's own numbers need every item.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pruneflow.spec import registry

OPS = ("<", ">", "~")
OUTCOMES = ("holds", "does not hold", "within noise", "not run")
CLAIM_KEYS = ("id", "paper", "claim", "source", "compare", "holds_if", "tolerance", "column")
REQUIRED = ("id", "paper", "claim", "compare", "holds_if")
# Columns a selector may name, per kind of study table (pruneflow.report.tables builds them).
SELECTOR_COLUMNS = {
    "unstructured": ("method", "pattern", "stream", "calibration", "allocation", "refinement", "settings"),
    "recovery": ("method", "pattern", "stream", "calibration", "allocation", "refinement", "settings", "recovery"),
    "structured": ("criterion", "target", "ratio", "reconstruction", "damping"),
}


class ClaimsError(ValueError):
    """claims.yaml is malformed, or a selector picks more than one row; the message names the place."""


@dataclass(frozen=True)
class Selector:
    table: str
    values: tuple[tuple[str, str], ...]  # (column, value as written)

    @property
    def label(self) -> str:
        return " ".join(v for _, v in self.values) or self.table


@dataclass(frozen=True)
class Term:
    rows: tuple[Selector, ...]  # one, or several ("each of them")
    ratio: bool = False  # rows[0] / rows[1]


@dataclass
class Claim:
    id: str
    paper: str
    claim: str
    compare: list[Term]
    holds_if: str
    source: str = ""
    tolerance: float | None = None
    column: str = "perplexity"
    tables: set = field(default_factory=set)


# ---------------------------------------------------------------- reading claims.yaml


def load_claims(path: str | Path, study_kinds: dict[str, str] | None = None) -> tuple[list[Claim], Path | None]:
    """(claims, noise-band file or None) from ``path``; errors name the claim and key. With
    ``study_kinds`` ({study: kind}) a selector's columns are checked against its table's kind."""
    path = Path(path)
    if not path.is_file():
        raise ClaimsError(f"{path}: no such file; allowed: a claims file like the workflow's claims.yaml (config key 'claims')")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ClaimsError(f"{path}: cannot be read as YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ClaimsError(f"{path}: expected a mapping with a list under 'claims'")
    extra = set(data) - {"claims", "noise_bands"}
    if extra:
        raise ClaimsError(f"{path}: unknown keys {sorted(extra)}; allowed: claims, noise_bands")
    bands = path.parent / data["noise_bands"] if data.get("noise_bands") else None
    claims, seen = [], set()
    for i, raw in enumerate(data["claims"]):
        where = f"{path.name}: claims[{i}]" + (f" ({raw.get('id')})" if isinstance(raw, dict) and raw.get("id") else "")
        claim = _parse_claim(raw, where, study_kinds)
        if claim.id in seen:
            raise ClaimsError(f"{where}: id {claim.id!r} is used twice; ids must be unique")
        seen.add(claim.id)
        claims.append(claim)
    return claims, bands


def _parse_claim(raw, where: str, study_kinds) -> Claim:
    if not isinstance(raw, dict):
        raise ClaimsError(f"{where}: expected a mapping with keys {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in raw]
    extra = [k for k in raw if k not in CLAIM_KEYS]
    if missing or extra:
        raise ClaimsError(f"{where}: " + (f"missing {missing}" if missing else f"unknown keys {extra}") + f"; allowed keys: {', '.join(CLAIM_KEYS)}")
    if raw["holds_if"] not in OPS:
        raise ClaimsError(f"{where}.holds_if: {raw['holds_if']!r} is not allowed; allowed: {', '.join(OPS)}")
    tolerance = raw.get("tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0):
        raise ClaimsError(f"{where}.tolerance: {tolerance!r} is not allowed; allowed: a number >= 0 (relative, 0.05 = 5%)")
    if raw["holds_if"] == "~" and tolerance is None:
        raise ClaimsError(f"{where}: holds_if '~' needs a tolerance (relative, e.g. 0.05)")
    if not isinstance(raw["compare"], list) or len(raw["compare"]) < 2:
        raise ClaimsError(f"{where}.compare: expected a list of at least two terms (rows, lists of rows, or ratios)")
    terms = [_parse_term(t, f"{where}.compare[{j}]", study_kinds) for j, t in enumerate(raw["compare"])]
    tables = {s.table for t in terms for s in t.rows}
    return Claim(str(raw["id"]), str(raw["paper"]), str(raw["claim"]).strip(), terms, raw["holds_if"],
                 str(raw.get("source", "")), None if tolerance is None else float(tolerance), str(raw.get("column", "perplexity")), tables)


def _parse_term(raw, where: str, study_kinds) -> Term:
    if isinstance(raw, dict) and "ratio_of" in raw:
        if set(raw) != {"ratio_of"} or not isinstance(raw["ratio_of"], list) or len(raw["ratio_of"]) != 2:
            raise ClaimsError(f"{where}: a ratio is {{ratio_of: [row, row]}} (the first row's value over the second's)")
        return Term(tuple(_parse_selector(s, f"{where}.ratio_of[{k}]", study_kinds) for k, s in enumerate(raw["ratio_of"])), ratio=True)
    if isinstance(raw, list):
        if not raw:
            raise ClaimsError(f"{where}: an empty list of rows")
        return Term(tuple(_parse_selector(s, f"{where}[{k}]", study_kinds) for k, s in enumerate(raw)))
    return Term((_parse_selector(raw, where, study_kinds),))


def _parse_selector(raw, where: str, study_kinds) -> Selector:
    if not isinstance(raw, dict) or "table" not in raw:
        raise ClaimsError(f"{where}: a row is a mapping with 'table' (a study name) and column values that pick one row")
    table = str(raw["table"])
    values = tuple((str(k), _spell(v)) for k, v in raw.items() if k != "table")
    kind = (study_kinds or {}).get(table)
    if kind is not None:
        allowed = SELECTOR_COLUMNS[kind]
        bad = [k for k, _ in values if k not in allowed]
        if bad:
            raise ClaimsError(f"{where}: column {bad[0]!r} is not in the {kind} table {table!r}; allowed: {', '.join(allowed)}")
    return Selector(table, values)


def _spell(value) -> str:
    """Table cells and selector values compared as text: 0.5, "0.5" and 0.50 are one value; NaN is "-"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{float(value):g}"
    text = str(value).strip()
    try:
        return f"{float(text):g}" if text not in ("", "-") and ":" not in text else (text or "-")
    except ValueError:
        return text


# ---------------------------------------------------------------- noise bands


def read_bands(path: str | Path | None) -> list[dict]:
    """The measured bands (``bench/results/noise_band.json``: ``{"bands": [...]}``); none if no file. An
    entry without ``band_pct`` (its label was run once: no spread) is no band."""
    if path is None or not Path(path).is_file():
        return []
    return [b for b in json.loads(Path(path).read_text()).get("bands", []) if "band_pct" in b]


def _row_band(row: pd.Series, bands: list[dict]) -> float | None:
    """The measured band (% of the value) of the method and pattern of ``row``, for its model and calibration."""
    for band in bands:
        if band.get("model") != row.get("model") or ("recovery" in row and _spell(row["recovery"]) != "none"):
            continue
        uniform = registry.implicit("allocation")
        if _spell(row.get("allocation", uniform)) != uniform or _spell(row.get("refinement", "none")) != "none":
            continue  # bands are measured for a criterion's own mask under uniform sparsity
        if "calibration" in band and "calibration" in row and band["calibration"] != row["calibration"]:
            continue
        if _spell(band.get("method")) == _spell(row.get("method")) and _spell(band.get("pattern")) == _spell(row.get("pattern")) \
                and _spell(band.get("stream", row.get("stream"))) == _spell(row.get("stream")):
            return float(band["band_pct"])
    return None


def band_column(df: pd.DataFrame, bands: list[dict]) -> list[float]:
    """Per row of a study table, its measured noise band in % (NaN where none was measured)."""
    return [b if (b := _row_band(row, bands)) is not None else float("nan") for _, row in df.iterrows()]


# ---------------------------------------------------------------- evaluation


class _NotRun(Exception):
    pass


def _find(selector: Selector, tables: dict[str, pd.DataFrame], claim: Claim) -> pd.Series:
    if selector.table not in tables:
        raise _NotRun(f"table {selector.table} was not made by this configuration")
    df = tables[selector.table]
    mask = pd.Series(True, index=df.index)
    for column, value in selector.values:
        if column not in df.columns:
            raise _NotRun(f"table {selector.table} has no column {column}")
        mask &= df[column].map(_spell) == value
    rows = df[mask]
    if len(rows) > 1:
        raise ClaimsError(f"claim {claim.id}: {dict(selector.values)} picks {len(rows)} rows of table {selector.table}; "
                          "add a column value (stream, calibration, ...) that tells them apart")
    if not len(rows):
        raise _NotRun(f"no row {selector.label} in table {selector.table}")
    if claim.column not in rows.columns:
        raise _NotRun(f"table {selector.table} has no column {claim.column}")
    return rows.iloc[0]


def _value(term: Term, tables, claim, bands) -> list[tuple[str, float, float | None]]:
    """[(label, value, band %)] of a term: one per row, or one for a ratio."""
    found = [_find(s, tables, claim) for s in term.rows]
    if term.ratio:
        a, b = (float(r[claim.column]) for r in found)
        band_a, band_b = (_row_band(r, bands) for r in found)
        band = None if band_a is None and band_b is None else (band_a or 0) + (band_b or 0)
        return [(f"({term.rows[0].label} / {term.rows[1].label})", a / b, band)]
    return [(s.label, float(r[claim.column]), _row_band(r, bands)) for s, r in zip(term.rows, found)]


def _limited(claim: Claim, tables: dict[str, pd.DataFrame]) -> str:
    """The zero-shot tasks behind a claim's numbers that were scored on part of their items (``zeroshot.limit``):
    ``hellaswag 50/10042`` per row, from its table's ``zeroshot_limited`` column; "" when every item was scored."""
    notes = []
    for term in claim.compare:
        for selector in term.rows:
            row = _find(selector, tables, claim)
            cell = row.get("zeroshot_limited")
            if not isinstance(cell, str) or cell in ("", "-"):
                continue
            for note in cell.split("; "):
                task = note.rsplit(" ", 1)[0]
                if claim.column == "acc_mean" or claim.column.endswith(f"_{task}"):
                    notes.append(f"{selector.label}: {note}")
    return "; ".join(dict.fromkeys(notes))


def _holds(op: str, a: float, b: float, tol: float) -> bool:
    if op == "<":
        return a < b * (1 + tol) if tol else a < b
    if op == ">":
        return a * (1 + tol) > b if tol else a > b
    return abs(a / b - 1) <= tol


def _margin(op: str, a: float, b: float) -> float:
    """Relative margin in %, positive in the claim's favour (for ~: the gap itself)."""
    if op == "<":
        return 100 * (b / a - 1)
    if op == ">":
        return 100 * (a / b - 1)
    return 100 * abs(a / b - 1)


def _distance(op: str, a: float, b: float, tol: float) -> float:
    """How far the pair is from flipping the claim's outcome: the change of ``a`` (in %) that would put it on
    the claim's threshold (for ~: the gap's distance from the tolerance)."""
    if op == "<":
        return 100 * abs(b * (1 + tol) / a - 1)
    if op == ">":
        return 100 * abs(b / ((1 + tol) * a) - 1)
    return 100 * abs(abs(a / b - 1) - tol)


def evaluate_claim(claim: Claim, tables: dict[str, pd.DataFrame], bands: list[dict] | None = None) -> dict:
    """One ledger row: the claim, the numbers compared, the outcome, the tightest margin and its band.

    A pair of rows whose distance from the claim's threshold is less than the larger of their measured bands
    could flip under a perturbation the band measured (another seed, thread count, float64): a claim that holds
    with such a pair, or fails only on such pairs, is **within noise** (``measured`` keeps what the numbers say)."""
    bands = bands or []
    row = {"id": claim.id, "paper": claim.paper, "claim": claim.claim, "source": claim.source, "column": claim.column}
    try:
        values = [_value(t, tables, claim, bands) for t in claim.compare]
    except _NotRun as why:
        return {**row, "comparison": "", "outcome": "not run", "measured": "", "margin_pct": float("nan"),
                "band_pct": float("nan"), "within_band": "", "note": str(why), "limited": ""}
    row["limited"] = _limited(claim, tables)
    op, tol = claim.holds_if, claim.tolerance or 0.0
    symbol = {"<": " < ", ">": " > ", "~": " ≈ "}[op]
    comparison = symbol.join(", ".join(f"{label} {value:.4g}" for label, value, _ in term) for term in values)
    if tol:
        comparison += f" (tolerance {100 * tol:g}%)"
    pairs = []
    for left, right in zip(values, values[1:]):
        for a in left:
            for b in right:
                known = [x for x in (a[2], b[2]) if x is not None]
                pairs.append({"a": a, "b": b, "holds": _holds(op, a[1], b[1], tol), "distance": _distance(op, a[1], b[1], tol),
                              "band": max(known) if known else None})
    holds = all(p["holds"] for p in pairs)
    # The tightest pair: the smallest margin in the claim's favour (for ~, the largest gap).
    sign = -1 if op == "~" else 1
    tightest = min(pairs, key=lambda p: sign * _margin(op, p["a"][1], p["b"][1]))
    deciding = pairs if holds else [p for p in pairs if not p["holds"]]
    fragile = [p for p in deciding if p["band"] is not None and p["distance"] < p["band"]]
    noisy = bool(fragile) if holds else len(fragile) == len(deciding)
    shown = min(fragile, key=lambda p: p["distance"] - p["band"]) if noisy else tightest
    banded = [p for p in pairs if p["band"] is not None]
    note = ""
    if noisy:
        note = (f"{shown['a'][0]} vs {shown['b'][0]} is {shown['distance']:.2g}% from the claim's threshold, inside "
                f"their measured band ±{shown['band']:.2g}% (seeds, float order, references)")
    measured = "holds" if holds else "does not hold"
    return {**row, "comparison": comparison, "outcome": "within noise" if noisy else measured, "measured": measured,
            "margin_pct": _margin(op, tightest["a"][1], tightest["b"][1]),
            "band_pct": shown["band"] if shown["band"] is not None else float("nan"),
            "within_band": "" if not banded else ("yes" if noisy else "no"), "note": note}


def evaluate(claims: list[Claim], tables: dict[str, pd.DataFrame], bands: list[dict] | None = None) -> pd.DataFrame:
    return pd.DataFrame([evaluate_claim(c, tables, bands) for c in claims],
                        columns=["id", "paper", "claim", "source", "column", "comparison", "outcome", "measured", "margin_pct",
                                 "band_pct", "within_band", "note", "limited"])


def ledger_markdown(df: pd.DataFrame) -> str:
    """The ledger as Markdown: per paper, each claim, our numbers and the outcome."""
    lines = ["| paper | claim | our numbers | outcome |", "|---|---|---|---|"]
    for _, r in df.iterrows():
        outcome = f"**{r.outcome}**"
        if r.outcome in ("not run", "within noise"):
            outcome += f" ({r.note})"
        if isinstance(r.get("limited"), str) and r.get("limited"):  # zero-shot numbers from part of a task's items
            outcome += f" (limited: {r['limited']} items, zeroshot.limit)"
        numbers = r.comparison.replace("|", "/") or "-"
        lines.append(f"| {r.paper} | {r.claim} | {numbers} | {outcome} |")
    counts = df.outcome.value_counts()
    summary = ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES)
    return "\n".join(lines) + f"\n\n{len(df)} claims: {summary}.\n"


def read_tables(paths) -> dict[str, pd.DataFrame]:
    """{study: table} from results/tables/<study>.csv paths (the ledger's own files excluded), each checked against
    its manifest first: a changed byte stops the ledger (naming the file) rather than change a verdict."""
    return {Path(p).stem: read_table(p) for p in paths if Path(p).stem != "claims"}


def read_table(path, **kwargs) -> pd.DataFrame:
    """A table CSV PruneFlow wrote, checked (:func:`pruneflow.core.artifacts.load_file`); ``kwargs`` go to pandas."""
    import io

    from pruneflow.core.artifacts import load_file

    return pd.read_csv(io.BytesIO(load_file(path)), **kwargs)
