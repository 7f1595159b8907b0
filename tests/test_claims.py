"""The claims ledger: claims.yaml read and checked, each claim evaluated over table rows."""

import copy
import json
import math
import os
import re
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import REPO, bench_module
from pruneflow.core.artifacts import save_file
from pruneflow.report.claims import ClaimsError, evaluate, ledger_markdown, load_claims


def _tables():
    wanda = pd.DataFrame({
        "model": "m", "method": ["dense", "magnitude", "sparsegpt", "wanda", "magnitude", "sparsegpt", "wanda"],
        "pattern": [None, "0.5", "0.5", "0.5", "2:4", "2:4", "2:4"], "stream": ["-", "-", "sequential", "sequential", "-", "sequential", "sequential"],
        "calibration": ["-", "none", "c", "c", "none", "c", "c"],
        "perplexity": [13.8, 302.8, 35.97, 36.06, 1103.0, 79.4, 140.1],
    })
    recon = pd.DataFrame({
        "model": "m", "method": ["dense", "wanda", "wanda", "wanda"], "pattern": [None, 0.5, 0.5, 0.5],
        "recovery": ["none", "none", "recon:sublayer:pruned:all", "recon:block:pruned:all"], "perplexity": [13.8, 36.06, 32.8, 30.3],
    })
    liar = pd.DataFrame({
        "model": "m", "criterion": ["dense", "fluctuation", "fluctuation", "fluctuation"], "target": ["-", "neurons", "neurons", "neurons"],
        "ratio": [0.0, 0.2, 0.2, 0.2], "reconstruction": ["-", "none", "bias", "liar"], "damping": ["-", "-", "-", "auto"],
        "perplexity": [13.8, 29.4, 28.8, 25.7],
    })
    return {"wanda_table": wanda, "reconstruction_table": recon, "liar_table": liar}


def _claims(tmp_path, claims, **extra):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": claims, **extra}, sort_keys=False))
    return path


def _claim(cid, compare, op="<", **extra):
    return {"id": cid, "paper": "P", "claim": f"claim {cid}", "compare": compare, "holds_if": op, **extra}


W = {"table": "wanda_table"}


def test_outcomes_numbers_margins_and_not_run(tmp_path):
    claims, _ = load_claims(_claims(tmp_path, [
        _claim("a", [{**W, "method": "wanda", "pattern": 0.5}, {**W, "method": "magnitude", "pattern": 0.5}]),
        _claim("b", [{**W, "method": "wanda", "pattern": "2:4"}, {**W, "method": "sparsegpt", "pattern": "2:4"}]),
        _claim("c", [{**W, "method": "wanda", "pattern": 0.5}, {**W, "method": "sparsegpt", "pattern": 0.5}], "~", tolerance=0.05),
        _claim("d", [{"table": "liar_table", "reconstruction": "liar", "damping": "auto"},
                     {"table": "liar_table", "ratio": 0.2, "reconstruction": "bias"},
                     {"table": "liar_table", "ratio": "0.2", "reconstruction": "none"}]),
        _claim("e", [{"table": "recon_sweep", "method": "wanda"}, {**W, "method": "wanda", "pattern": 0.5}]),
        _claim("f", [{**W, "method": "wanda", "pattern": "4:8"}, {**W, "method": "sparsegpt", "pattern": "4:8"}]),
        _claim("g", [[{"table": "reconstruction_table", "recovery": "recon:sublayer:pruned:all"},
                      {"table": "reconstruction_table", "recovery": "recon:block:pruned:all"}],
                     {"table": "reconstruction_table", "method": "wanda", "recovery": "none"}]),
        _claim("h", [{"table": "reconstruction_table", "recovery": "recon:sublayer:pruned:all"},
                     {"table": "reconstruction_table", "recovery": "recon:block:pruned:all"}], tolerance=0.05),
        _claim("i", [{"ratio_of": [{**W, "method": "wanda", "pattern": "2:4"}, {**W, "method": "sparsegpt", "pattern": "2:4"}]},
                     {"ratio_of": [{**W, "method": "wanda", "pattern": 0.5}, {**W, "method": "sparsegpt", "pattern": 0.5}]}], ">"),
    ]))
    df = evaluate(claims, _tables()).set_index("id")
    assert df.outcome.to_dict() == {"a": "holds", "b": "does not hold", "c": "holds", "d": "holds", "e": "not run",
                                    "f": "not run", "g": "holds", "h": "does not hold", "i": "holds"}
    assert df.loc["a", "margin_pct"] == pytest.approx(100 * (302.8 / 36.06 - 1))
    assert df.loc["b", "margin_pct"] < 0 and df.loc["c", "margin_pct"] == pytest.approx(100 * (36.06 / 35.97 - 1))
    assert df.loc["a", "comparison"] == "wanda 0.5 36.06 < magnitude 0.5 302.8"
    assert "table recon_sweep was not made" in df.loc["e", "note"] and "no row wanda 4:8" in df.loc["f", "note"]
    assert df.loc["g", "margin_pct"] == pytest.approx(100 * (36.06 / 32.8 - 1))  # the tightest pair
    assert df.loc["h", "comparison"].endswith("(tolerance 5%)")  # 32.8 > 30.3 · 1.05
    md = ledger_markdown(df.reset_index())
    assert "| P | claim a |" in md and "9 claims: 5 holds, 2 does not hold, 0 within noise, 2 not run." in md


def test_a_claim_inside_the_measured_band_reads_within_noise(tmp_path):
    """sparsegpt 35.97 < wanda 36.06 holds by 0.25%, inside sparsegpt's 2% band: within noise, not holds; the
    same claim with no band measured for its rows (another model's band) holds."""
    claims, _ = load_claims(_claims(tmp_path, [
        _claim("tie", [{**W, "method": "sparsegpt", "pattern": 0.5}, {**W, "method": "wanda", "pattern": 0.5}]),
        _claim("far", [{**W, "method": "wanda", "pattern": 0.5}, {**W, "method": "magnitude", "pattern": 0.5}]),
    ]))
    bands = [{"model": "m", "method": "sparsegpt", "pattern": "0.5", "stream": "sequential", "calibration": "c", "band_pct": 2.0},
             {"model": "other", "method": "wanda", "pattern": "0.5", "stream": "sequential", "band_pct": 50.0}]
    df = evaluate(claims, _tables(), bands).set_index("id")
    assert df.loc["tie", "outcome"] == "within noise" and df.loc["tie", "measured"] == "holds"
    assert df.loc["tie", "within_band"] == "yes" and df.loc["tie", "band_pct"] == 2.0
    assert "inside their measured band ±2%" in df.loc["tie", "note"]
    assert df.loc["far", "outcome"] == "holds" and df.loc["far", "within_band"] == ""
    assert math.isnan(df.loc["far", "band_pct"])  # the 50% band is another model's
    assert evaluate(claims, _tables(), []).set_index("id").loc["tie", "outcome"] == "holds"
    md = ledger_markdown(df.reset_index())
    assert "**within noise** (sparsegpt 0.5 vs wanda 0.5 is 0.25% from" in md and "1 holds, 0 does not hold, 1 within noise" in md


@pytest.mark.parametrize("op, tolerance, band, outcome", [
    ("<", None, 1.0, "within noise"),    # wanda 36.06 < sparsegpt 35.97 fails by 0.25%, inside a 1% band
    ("<", None, 0.1, "does not hold"),   # ... outside a 0.1% band
    ("~", 0.05, 1.0, "holds"),           # a 0.25% gap is 4.75% from the 5% tolerance, outside a 1% band
    ("~", 0.003, 1.0, "within noise"),   # ... but 0.05% from a 0.3% tolerance
    ("~", 0.001, 0.1, "does not hold"),  # a 0.25% gap is 0.15% beyond a 0.1% tolerance, outside a 0.1% band
])
def test_within_noise_is_the_distance_from_the_claims_threshold(tmp_path, op, tolerance, band, outcome):
    extra = {"tolerance": tolerance} if tolerance is not None else {}
    claims, _ = load_claims(_claims(tmp_path, [
        _claim("x", [{**W, "method": "wanda", "pattern": 0.5}, {**W, "method": "sparsegpt", "pattern": 0.5}], op, **extra)]))
    bands = [{"model": "m", "method": "wanda", "pattern": "0.5", "stream": "sequential", "calibration": "c", "band_pct": band}]
    assert evaluate(claims, _tables(), bands).outcome[0] == outcome


def test_a_selector_that_picks_two_rows_is_an_error(tmp_path):
    claims, _ = load_claims(_claims(tmp_path, [_claim("x", [{**W, "method": "wanda"}, {**W, "method": "magnitude", "pattern": 0.5}])]))
    with pytest.raises(ClaimsError, match=r"claim x: .*picks 2 rows of table wanda_table; add a column value"):
        evaluate(claims, _tables())


@pytest.mark.parametrize("claim, message", [
    (_claim("x", [W, W], "<="), r"claims\[0\] \(x\)\.holds_if: '<=' is not allowed; allowed: <, >, ~"),
    (_claim("x", [W, W], "~"), r"holds_if '~' needs a tolerance"),
    (_claim("x", [W]), r"compare: expected a list of at least two terms"),
    ({**_claim("x", [W, W]), "sources": "y"}, r"unknown keys \['sources'\]; allowed keys: id, paper"),
    (_claim("x", [W, {"method": "wanda"}]), r"compare\[1\]: a row is a mapping with 'table'"),
    (_claim("x", [W, {"table": "liar_table", "method": "liar"}]), r"column 'method' is not in the structured table 'liar_table'; allowed: criterion"),
    (_claim("x", [W, W], tolerance=-1), r"tolerance: -1 is not allowed"),
])
def test_bad_claims_name_the_claim_key_and_allowed(tmp_path, claim, message):
    with pytest.raises(ClaimsError, match=message):
        load_claims(_claims(tmp_path, [claim]), {"wanda_table": "unstructured", "liar_table": "structured"})


def test_missing_or_malformed_claims_file_is_named(tmp_path):
    with pytest.raises(ClaimsError, match=r"nope\.yaml: no such file; allowed: a claims file"):
        load_claims(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("claims: {a: 1}\n")
    with pytest.raises(ClaimsError, match=r"bad\.yaml: expected a mapping with a list under 'claims'"):
        load_claims(tmp_path / "bad.yaml")


def test_repository_claims_name_only_configured_tables_and_columns():
    """Every claim of claims.yaml reads tables the default or the extended configuration makes, with the
    columns those tables have (a typo would leave a claim 'not run' for ever)."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    merged = copy.deepcopy(config)
    update_config(merged, yaml.safe_load((REPO / "config" / "extended.yaml").read_text()))  # as --configfile does
    studies = merged["studies"]
    kinds = {name: s.get("kind", "unstructured") for name, s in studies.items()}
    claims, bands = load_claims(REPO / "claims.yaml", kinds)
    assert len(claims) >= 25 and bands == REPO / "bench/results/noise_band.json"
    assert {t for c in claims for t in c.tables} <= set(studies)
    default_tables = {t for c in claims for t in c.tables if t in config["studies"]}
    assert {"wanda_table", "reconstruction_table", "perp_table", "liar_table"} <= default_tables
    assert {"wanda_groups", "liar_ablation", "recon_sweep"} <= {t for c in claims for t in c.tables} - default_tables


def test_a_label_run_once_gives_no_band(tmp_path):
    """bench/noise_band.py gives a band only from two or more runs of the band's label; the ledger reads
    only entries with a band (one run is no spread, not a band of 0%)."""
    import json

    from pruneflow.report.claims import read_bands

    noise_band = bench_module("noise_band")
    runs = [{"label": "old", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 80.0},
            {"label": "new", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 80.0},
            {"label": "new", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 80.4},
            {"label": "new", "criterion": "wanda", "pattern": "2:4", "perplexity": 140.0}]
    entries = noise_band.bands(runs, "new")
    assert [e.get("band_pct") for e in entries] == [pytest.approx(0.5), None]
    assert "band_pct" not in noise_band.bands(runs, "old")[0]
    (tmp_path / "bands.json").write_text(json.dumps({"bands": entries}))
    assert [b["method"] for b in read_bands(tmp_path / "bands.json")] == ["sparsegpt"]


def test_noise_bands_are_kept_per_calibration():
    """Runs with another calibration make their own band: a spread measured for 32 calibration samples is
    not the band of a table made from 16 (runs recorded before runs named theirs are the 32-sample ones)."""

    noise_band = bench_module("noise_band")
    runs = [{"label": "new", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 80.0},
            {"label": "new", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 88.0},
            {"label": "new", "calibration": "brown-n16-l256-s0", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 90.0},
            {"label": "new", "calibration": "brown-n16-l256-s0", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 90.9}]
    entries = {e["calibration"]: e.get("band_pct") for e in noise_band.bands(runs, "new")}
    assert entries == {"brown-n32-l256-s0": pytest.approx(10.0), "brown-n16-l256-s0": pytest.approx(1.0)}


def test_band_spans_float_order_and_calibration_seeds_and_says_what_it_covers():
    """The band of an entry is the spread over its float-order runs (threads, float64, ...) and its calibration
    seeds; float64 is shown beside the workflow-settings float32 number, and the band says whether it covers
    float64 and another machine's result (quoted to 4 digits: off by half a last digit at most)."""
    noise_band = bench_module("noise_band")
    c = "brown-n16-l256-s"
    runs = [{"label": "new", "calibration": f"{c}0", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 100.0},
            {"label": "new", "calibration": f"{c}0", "criterion": "sparsegpt", "pattern": "2:4", "dtype": "float64", "perplexity": 101.0},
            {"label": "new", "calibration": f"{c}0", "criterion": "sparsegpt", "pattern": "2:4", "threads": 2, "perplexity": 100.0},
            {"label": "new", "calibration": f"{c}1", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 104.0},
            {"label": "new", "calibration": f"{c}2", "criterion": "sparsegpt", "pattern": "2:4", "perplexity": 98.0}]
    other = {"digits": 4, "entries": {f"{c}0 sparsegpt 2:4": 106.1}}
    entries = {e["calibration"]: e for e in noise_band.bands(runs, "new", other)}
    e = entries[f"{c}0"]
    assert e["float_pct"] == pytest.approx(1.0) and e["seed_pct"] == pytest.approx(100 * (104 / 98 - 1)) and e["seeds"] == 3
    assert e["band_pct"] == pytest.approx(100 * (104 / 98 - 1))
    assert e["runs"] == {"workflow": 100.0, "dtype=float64": 101.0, "threads=2": 100.0}  # what each run changed
    assert (e["float32"], e["float64"]) == (100.0, 101.0) and e["float32_vs_float64_pct"] == pytest.approx(100 * (100 / 101 - 1))
    assert e["band_covers"] == {"float64": True, "other_machine": True}  # 106.1 ± 0.05 vs 6.12%
    other["entries"][f"{c}0 sparsegpt 2:4"] = 106.2
    assert noise_band.bands(runs, "new", other)[0]["band_covers"]["other_machine"] is False
    assert entries[f"{c}1"]["band_pct"] == e["band_pct"] and "float_pct" not in entries[f"{c}1"]  # one run of seed 1


def test_results_page_ledger_states_every_claim_with_an_outcome():
    """The ledger block of docs/results.md lists every claim of claims.yaml, word for word, with an outcome,
    and the README repeats its summary line."""
    page = (REPO / "docs" / "results.md").read_text()
    block = page.split("<!-- claims ledger -->")[1].split("<!-- end claims ledger -->")[0]
    claims, _ = load_claims(REPO / "claims.yaml")
    rows = {r.split("|")[2].strip(): r for r in block.splitlines() if r.startswith("| ") and "---" not in r}
    for claim in claims:
        assert claim.claim in rows, claim.id
        assert re.search(r"\*\*(holds|does not hold|within noise|not run)\*\*", rows[claim.claim]), claim.id
    summary = block.strip().splitlines()[-1]
    # A page generated before the ledger had "within noise" lacks its count (its run predates the bands).
    assert re.fullmatch(rf"{len(claims)} claims: \d+ holds, \d+ does not hold,( \d+ within noise,)? \d+ not run\.", summary)
    assert summary in (REPO / "README.md").read_text()


def _csv(df, path):
    """A table as the workflow writes it: with its manifest beside it (readers check it)."""
    save_file(path, df.to_csv(index=False).encode())


def _results_run(tmp_path):
    """A finished run's tables in ``tmp_path``: two studies of a config (one not made), a figure, claims.csv."""
    tables, figures, docs = tmp_path / "tables", tmp_path / "figures", tmp_path / "docs"
    for d in (tables, figures, docs):
        d.mkdir()
    _csv(_tables()["wanda_table"].assign(prune_s=1.5), tables / "wanda_table.csv")
    (figures / "wanda_table.png").write_bytes(b"\x89PNG figure")
    claims, _ = load_claims(_claims(tmp_path, [
        _claim("a", [{**W, "method": "wanda", "pattern": 0.5}, {**W, "method": "magnitude", "pattern": 0.5}]),
        _claim("e", [{"table": "recon_sweep", "method": "wanda"}, {**W, "method": "wanda", "pattern": 0.5}]),
    ]))
    (tables / "claims.md").write_text(ledger_markdown(evaluate(claims, {"wanda_table": _tables()["wanda_table"]})))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"studies": {"wanda_table": {"title": "The Wanda table"}, "perp_table": {}}}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results -->\nold rows\n<!-- end results -->\nafter\n")
    args = ["--tables", str(tables), "--figures", str(figures), "--config", str(config), "--docs", str(docs),
            "--readme", str(readme), "--claims", str(tmp_path / "claims.yaml"), "--write"]
    return args, docs, readme


def test_results_generator_writes_the_page_the_figures_and_the_readme_block(tmp_path):
    """bench/readme_results.py evaluates the ledger over the config's tables (none without one), writes
    docs/results.md with each table of the config's studies, its figure and provenance line, copies the figure, and
    refreshes only the README's results block."""
    readme_results = bench_module("readme_results")
    assert readme_results.claims_block(tmp_path, {"wanda_table": "t"}) is None
    args, docs, readme = _results_run(tmp_path)
    (tmp_path / "prov.json").write_text(json.dumps({"commit": "abc1234", "date": "2026-12-01", "machine": "Linux-x86_64",
                                                   "cpu": "Some CPU", "cpu_flags": ["avx2", "avx512f"], "cores": 2, "torch": "2.13.0+cpu"}))
    readme_results.main([*args, "--provenance", str(tmp_path / "prov.json")])
    page = (docs / "results.md").read_text()
    assert "## The Wanda table\n\n`results/tables/wanda_table.csv`" in page and "perp_table" not in page  # not made: left out
    assert "| wanda     | 0.5       | sequential |        36.06 |" in page and "![The Wanda table](figures/wanda_table.png)" in page
    assert ("*Provenance*: commit `abc1234`, 2026-12-01, Linux-x86_64, Some CPU (avx2, avx512f), 2 cores, torch 2.13.0+cpu."
            in page)
    assert "| P | claim a | wanda 0.5 36.06 < magnitude 0.5 302.8 | **holds** |" in page
    assert "| P | claim e | - | **not run** (table recon_sweep was not made" in page
    assert (docs / "figures" / "wanda_table.png").read_bytes() == b"\x89PNG figure"
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results -->\n| method ") and text.endswith("<!-- end results -->\nafter\n")
    assert "old rows" not in text and "![Wanda table](docs/figures/wanda_table.png)" in text
    assert "Claims ledger: 2 claims: 1 holds, 0 does not hold, 0 within noise, 1 not run." in text
    ledger = readme_results.claims_block(tmp_path / "tables", {"wanda_table": "t", "perp_table": "t"}, tmp_path / "claims.yaml")
    assert ledger == (tmp_path / "tables" / "claims.md").read_text()  # what the workflow's claims rule wrote
    filled = readme_results.fill(text, "results", readme_results.readme_block(tmp_path / "tables", ledger))
    assert filled == text  # refreshing twice changes nothing


def test_results_provenance_is_this_checkout_and_machine(tmp_path):
    """Without a recorded provenance, the line names this checkout's commit, this machine, its CPU flags and torch."""
    import platform

    import torch

    readme_results = bench_module("readme_results")
    args, docs, _ = _results_run(tmp_path)
    readme_results.main(args)
    line = next(x for x in (docs / "results.md").read_text().splitlines() if x.startswith("*Provenance*"))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert f"commit `{commit}" in line and platform.platform() in line and f"torch {torch.__version__} (" in line
    assert f"{os.cpu_count()} cores" in line and re.search(r", \d{4}-\d\d-\d\d \d\d:\d\d UTC, ", line)


def test_a_claim_on_limited_zero_shot_numbers_says_so(tmp_path):
    """Rows whose task was scored on part of its items (zeroshot.limit) are named in the ledger's limited column and
    its Markdown, for the columns they touch (a task's own, or the mean); other columns are not marked."""
    table = pd.DataFrame({"model": "m", "method": ["wanda", "magnitude"], "pattern": ["0.5", "0.5"], "stream": "-", "calibration": "c",
                          "perplexity": [36.0, 300.0], "acc_hellaswag": [0.5, 0.3], "acc_boolq": [0.6, 0.6], "acc_mean": [0.55, 0.45],
                          "zeroshot_limited": ["hellaswag 50/10042", "-"]})
    Z = {"table": "zeroshot_table"}
    pair = [{**Z, "method": "wanda"}, {**Z, "method": "magnitude"}]
    claims, _ = load_claims(_claims(tmp_path, [_claim("mean", pair, ">", column="acc_mean"), _claim("hs", pair, ">", column="acc_hellaswag"),
                                               _claim("bq", pair, "~", tolerance=0.01, column="acc_boolq"), _claim("ppl", pair)]))
    df = evaluate(claims, {"zeroshot_table": table})
    assert df.limited.tolist() == ["wanda: hellaswag 50/10042", "wanda: hellaswag 50/10042", "", ""]
    assert df.outcome.tolist() == ["holds"] * 4
    md = ledger_markdown(df)
    assert "| P | claim hs | wanda 0.5 > magnitude 0.3 | **holds** (limited: wanda: hellaswag 50/10042 items, zeroshot.limit) |" in md
    assert "| P | claim ppl | wanda 36 < magnitude 300 | **holds** |" in md


def test_results_provenance_names_the_libraries_that_scored_zero_shot(tmp_path):
    readme_results = bench_module("readme_results")
    table = tmp_path / "zeroshot_table.csv"
    _csv(pd.DataFrame({"method": ["dense"], "zeroshot_versions": ["lm_eval 0.4.13, transformers 5.25.0, torch 2.13.0+cpu"]}), table)
    prov = {"commit": "abc", "date": "2026-12-01", "machine": "L", "cpu": "C", "cores": 2, "torch": "2.13.0+cpu"}
    assert readme_results.provenance_line(prov, table).endswith(
        "torch 2.13.0+cpu; zero-shot scored with lm_eval 0.4.13, transformers 5.25.0, torch 2.13.0+cpu.")


def test_rows_are_picked_by_refinement_and_allocation_and_borrow_no_band(tmp_path):
    """A refined or reallocated variant shares its criterion and pattern with the plain one: the selectors tell them
    apart, and the plain row's measured band is not the refined row's (its own row ends up unbanded)."""
    table = pd.DataFrame({
        "model": "m", "method": ["dense", "wanda", "wanda", "wanda"], "pattern": [None, "0.5", "0.5", "0.5"],
        "stream": ["-", "sequential"] * 2, "refinement": ["-", "none", "dsnot", "none"],
        "allocation": ["-", "uniform", "uniform", "alphapruning"], "perplexity": [13.8, 36.0, 35.9, 35.5],
    })
    T = {"table": "new"}
    claims, _ = load_claims(_claims(tmp_path, [
        _claim("dsnot", [{**T, "refinement": "dsnot"}, {**T, "refinement": "none", "allocation": "uniform"}]),
        _claim("alpha", [{**T, "allocation": "alphapruning"}, {**T, "allocation": "uniform", "refinement": "none"}]),
        _claim("both", [{**T, "refinement": "dsnot"}, {**T, "allocation": "alphapruning"}]),
    ]), {"new": "unstructured"})
    bands = [{"model": "m", "method": "wanda", "pattern": "0.5", "stream": "sequential", "band_pct": 2.0}]
    df = evaluate(claims, {"new": table}, bands).set_index("id")
    assert df.outcome.to_dict() == {"dsnot": "within noise", "alpha": "within noise", "both": "does not hold"}
    assert df.loc["both", "within_band"] == ""  # neither row is the plain criterion's: no band applies
    with pytest.raises(ClaimsError, match="picks 2 rows"):
        evaluate(load_claims(_claims(tmp_path, [_claim("x", [{**T, "refinement": "none"}, {**T, "refinement": "dsnot"}])]))[0],
                 {"new": table})


def test_results_generator_adds_the_extended_section_and_keeps_it(tmp_path):
    """With --extended, the page gets the tables of the studies that file adds (one made, one not yet), and a second
    ledger over both configurations' tables; the default's ledger leaves the extended claim not run. Regenerating the
    default's part alone keeps that section."""
    readme_results = bench_module("readme_results")
    args, docs, _ = _results_run(tmp_path)
    new = _tables()["wanda_table"].assign(method=["dense", "magnitude", "sparsegpt", "ria", "magnitude", "sparsegpt", "ria"])
    _csv(new, tmp_path / "tables" / "ria_table.csv")
    extended = tmp_path / "extended.yaml"
    extended.write_text(yaml.safe_dump({"studies": {"ria_table": {"title": "RIA"}, "alps_table": {}, "wanda_table": {}}}))
    claims = yaml.safe_load((tmp_path / "claims.yaml").read_text())
    claims["claims"].append(_claim("r", [{"table": "ria_table", "method": "ria", "pattern": 0.5}, {**W, "method": "magnitude", "pattern": 0.5}]))
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(claims))
    (tmp_path / "prov.json").write_text(json.dumps({"commit": "abc1234", "date": "2026-12-07", "machine": "Linux", "cpu": "CPU",
                                                   "cores": 2, "torch": "2.13.0+cpu", "load": "load average 9.5"}))
    readme_results.main([*args, "--extended", str(extended), "--provenance", str(tmp_path / "prov.json")])
    page = (docs / "results.md").read_text()
    default = page.split("<!-- claims ledger -->")[1].split("<!-- end claims ledger -->")[0]
    section = page.split("<!-- extended results -->")[1].split("<!-- end extended results -->")[0]
    assert "| P | claim r | - | **not run** (table ria_table was not made" in default
    assert "## RIA\n\n`results/tables/ria_table.csv`" in section and "## wanda_table" not in section  # studies by title
    assert "Not run here yet: `alps_table`." in section and "torch 2.13.0+cpu, load average 9.5." in section
    ledger = section.split("<!-- extended claims ledger -->")[1]
    assert "| P | claim r | ria 0.5 36.06 < magnitude 0.5 302.8 | **holds** |" in ledger and "3 claims: 2 holds" in ledger
    summary = next(line for line in (tmp_path / "README.md").read_text().splitlines() if line.startswith("Claims ledger:"))
    assert "2 not run. With `config/extended.yaml`: 3 claims: 2 holds, 0 does not hold, 0 within noise, 1 not run." in summary
    readme_results.main(args)  # the default's part again: the extended section stays as it was
    assert (docs / "results.md").read_text().split("<!-- extended results -->")[1] == page.split("<!-- extended results -->")[1]


def test_results_generator_shows_widened_default_studies_from_the_extended_run(tmp_path):
    """A default study the extended file widens: the default section shows the default run's table (--tables), the
    extended section its widened table from --extended-tables, without a figure, and the extended ledger reads it."""
    readme_results = bench_module("readme_results")
    args, docs, _ = _results_run(tmp_path)
    wide = tmp_path / "wide"
    wide.mkdir()
    widened = _tables()["wanda_table"]
    widened = pd.concat([widened, widened.iloc[[1]].assign(pattern="0.7", perplexity=999.5)], ignore_index=True)
    _csv(widened, wide / "wanda_table.csv")
    extended = tmp_path / "extended.yaml"
    extended.write_text(yaml.safe_dump({"studies": {"wanda_table": {"patterns": [0.5, 0.7]}}}))
    (tmp_path / "ext.json").write_text(json.dumps({"commit": "def5678", "date": "2026-12-07", "machine": "Linux", "cpu": "CPU",
                                                  "cores": 2, "torch": "2.13.0+cpu", "load": "load average 2.1"}))
    readme_results.main([*args, "--extended", str(extended), "--extended-tables", str(wide),
                         "--extended-provenance", str(tmp_path / "ext.json")])
    page = (docs / "results.md").read_text()
    default, section = page.split("<!-- extended results -->")[0], page.split("<!-- extended results -->")[1]
    assert "999.5" not in default and "| 0.7 " not in default
    assert "#### The Wanda table\n\n`results/tables/wanda_table.csv`" in section and "999.5" in section
    assert "figures/wanda_table.png" not in section  # the default's figure is shown once, above
    assert "commit `def5678`, 2026-12-07, Linux, CPU, 2 cores, torch 2.13.0+cpu, load average 2.1." in section
    (wide / "wanda_table.provenance.json").write_text(json.dumps({"commit": "0ther00", "date": "2026-12-06", "machine": "L",
                                                                   "cpu": "C", "cores": 2, "torch": "t"}))
    readme_results.main([*args, "--extended", str(extended), "--extended-tables", str(wide)])
    section = (docs / "results.md").read_text().split("<!-- extended results -->")[1]
    assert "*Provenance*: commit `0ther00`, 2026-12-06, L, C, 2 cores, torch t." in section  # the table's own run
