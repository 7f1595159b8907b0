"""bench/noise_band.py's bands include the reference implementations' results, and docs/reproducibility.md shows
exactly what the committed bench/results/noise_band.json measured (no reference checkout needed here)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, bench_module

C = "brown-n16-l256-s"


def run(perplexity: float, seed: int = 0, **fields) -> dict:
    return {"label": "new", "calibration": f"{C}{seed}", "criterion": "sparsegpt", "pattern": "0.5", "perplexity": perplexity, **fields}


def test_a_reference_outside_pruneflows_spread_widens_the_band_to_cover_it():
    """PruneFlow's runs span 100-101 (1%); the reference's 97 lies outside: the band is 101/97 − 1, it covers the
    reference, and the entry records the reference's result, source, version and distance from the float32 number.
    A run on another CPU than the tables' is a perturbation, not the float32 number."""
    noise_band = bench_module("noise_band")
    runs = [run(100.0, cpu="AMD EPYC"), run(101.0, threads=2, cpu="AMD EPYC"), run(100.5, seed=1, cpu="AMD EPYC"),
            run(100.8, cpu="Intel Xeon"),
            run(97.0, impl="reference", source="IST-DASLab/sparsegpt", version="147d215", order="reversed", cpu="Intel Xeon"),
            run(80.0, impl="reference", source="IST-DASLab/sparsegpt", label="old")]  # another label: not in this band
    e = {b["calibration"]: b for b in noise_band.bands(runs, "new", tables_cpu="AMD EPYC")}[f"{C}0"]
    assert e["pruneflow_pct"] == pytest.approx(1.0)
    assert e["band_pct"] == pytest.approx(100 * (101 / 97 - 1))
    assert e["float32"] == 100.0 and e["runs"]["cpu=Intel Xeon"] == 100.8
    assert e["references"] == [{"source": "IST-DASLab/sparsegpt", "version": "147d215", "order": "reversed",
                                "perplexity": 97.0, "vs_float32_pct": pytest.approx(-3.0)}]
    assert e["band_covers"] == {"reference": True}
    without = noise_band.bands([r for r in runs if r.get("impl") != "reference"], "new", tables_cpu="AMD EPYC")
    assert without[0]["band_pct"] == pytest.approx(1.0) and noise_band.within(97.0, 100.0, without[0]["band_pct"]) is False


def test_reproducibility_page_shows_the_committed_bands():
    """The block of docs/reproducibility.md is what bench/band_page.py writes from the committed JSON (every number
    read from it), and the JSON's bands are what noise_band.py computes from its runs. Every Wanda and SparseGPT
    entry of the table has a reference result, inside its band."""
    noise_band, band_page = bench_module("noise_band"), bench_module("band_page")
    report = json.loads(band_page.BANDS.read_text())
    other = json.loads(noise_band.OTHER_MACHINE.read_text())
    assert report["bands"] == json.loads(json.dumps(noise_band.bands(report["runs"], report["band_label"], other, report["tables_cpu"])))
    page = (REPO / "docs" / "reproducibility.md").read_text()
    assert band_page.render(report) in page, "regenerate it: PYTHONPATH=src .venv/bin/python bench/band_page.py --write"
    table = band_page.entries(report)
    assert {(b["method"], b["pattern"]) for b in table} >= {(m, p) for m in ("wanda", "sparsegpt") for p in ("0.5", "4:8", "2:4")}
    for b in table:
        if b["method"] != "magnitude":
            assert b["references"] and b["band_covers"]["reference"], (b["method"], b["pattern"])
            assert all(abs(r["vs_float32_pct"]) <= b["band_pct"] for r in b["references"])
