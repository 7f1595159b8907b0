"""Noise band: how far a float-sensitive table entry moves when only the floating-point order changes.

SparseGPT and Wanda (sequential, as the workflow's wanda_table) on SmolLM2-135M at 50% and 2:4, each run
with 1 and 2 torch threads and with the calibration samples in their order and reversed: the same model,
the same calibration windows and the same evaluation windows as the default workflow (read from
config.yaml), so only the order of floating-point operations differs. Reads the workflow's artifacts (run
the default first). Runs and bands are kept per calibration, so a band follows the tables it was measured for.

A run is labelled with the build it measured (``--label``): run it once with this checkout's library and,
to measure an earlier build, with PYTHONPATH pointing at that build's ``src`` (``git archive <commit> src``).
Runs are merged into ``bench/results/noise_band.json`` by (label, criterion, pattern, threads, order);
``bands`` then gives, per criterion and pattern, the spread (max/min − 1, in %) of each label and the
band the tables and the claims ledger use: the spread of the build that makes the tables (``--band-label``,
default ``current``), measured over at least two runs. ``float32-sums`` is the build before the statistics
were summed in float64 (the reference code sums its Hessian in float32 too), kept for comparison.

Usage: PYTHONPATH=src .venv/bin/python bench/noise_band.py --label current [--criteria sparsegpt wanda]
       [--patterns 0.5 2:4] [--threads 1 2] [--orders forward reversed] [--out FILE]
       bench/noise_band.py --merge A.json B.json ... --out bench/results/noise_band.json  (runs made in parallel)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import yaml

from pruneflow.data.calibration import load_calibration
from pruneflow.prune.criteria import get_criterion
from pruneflow.evaluate.perplexity import eval_windows, perplexity
from pruneflow.data.jsonl import read_texts
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.core.stream import load_variant
from pruneflow.spec.naming import calib_id

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
MODEL = "smollm2-135m"
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())
OLD_CALIBRATION = "brown-n32-l256-s0"  # runs recorded before runs named their calibration
KEY = ("label", "calibration", "criterion", "pattern", "threads", "order")


def run(criterion: str, pattern: str, threads: int, order: str, calib: torch.Tensor, evals: torch.Tensor) -> dict:
    torch.set_num_threads(threads)
    model, _ = load_variant(RESULTS / MODEL / "dense")
    ids = calib.flip(0) if order == "reversed" else calib
    start = time.perf_counter()
    for _ in prune_model(model, get_criterion(criterion), parse_pattern(pattern), ids, "sequential", batch_size=8):
        pass
    seconds = time.perf_counter() - start
    torch.set_num_threads(1)  # the evaluation on one thread, as the workflow's perplexity job
    ppl = perplexity(model, evals, batch_size=4)["perplexity"]
    return {"criterion": criterion, "pattern": pattern, "threads": threads, "order": order, "perplexity": ppl, "prune_seconds": seconds}


def name_calibration(runs: list[dict]) -> list[dict]:
    """``runs`` with every run naming its calibration (runs recorded before runs named theirs get the old one)."""
    for r in runs:
        r.setdefault("calibration", OLD_CALIBRATION)
    return runs


def bands(runs: list[dict], band_label: str) -> list[dict]:
    """Per (calibration, criterion, pattern): each label's spread, and the band (the ``band_label`` spread,
    measured over at least two runs) in %; an entry without ``band_pct`` has no band (the ledger then flags nothing)."""
    out = []
    name_calibration(runs)
    for calibration, criterion, pattern in dict.fromkeys((r["calibration"], r["criterion"], r["pattern"]) for r in runs):
        entry = {"model": MODEL, "calibration": calibration, "method": criterion, "pattern": pattern, "stream": "sequential", "spread_pct": {}}
        for label in dict.fromkeys(r["label"] for r in runs):
            values = [r["perplexity"] for r in runs
                      if (r["calibration"], r["criterion"], r["pattern"], r["label"]) == (calibration, criterion, pattern, label)]
            if values:
                entry["spread_pct"][label] = {"min": min(values), "max": max(values), "runs": len(values),
                                              "pct": 100 * (max(values) / min(values) - 1)}
        if entry["spread_pct"].get(band_label, {}).get("runs", 0) >= 2:  # one run is no spread
            entry["band_pct"] = entry["spread_pct"][band_label]["pct"]
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="the build measured (e.g. float32-sums, current)")
    parser.add_argument("--criteria", nargs="+", default=["sparsegpt", "wanda"])
    parser.add_argument("--patterns", nargs="+", default=["0.5", "2:4"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--orders", nargs="+", default=["forward", "reversed"], choices=["forward", "reversed"])
    parser.add_argument("--windows", type=int, default=DEFAULT["perplexity"]["windows"], help="512-token evaluation windows (config.yaml's)")
    parser.add_argument("--calibration", default=calib_id(DEFAULT["calibration"]), help="calibration id under results/<model>/calib (config.yaml's)")
    parser.add_argument("--band-label", default="current", help="the label whose spread is the tables' band")
    parser.add_argument("--out", default=str(ROOT / "bench/results/noise_band.json"))
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="only merge the runs of these files into --out")
    args = parser.parse_args()
    if args.merge:  # runs measured in parallel processes, each into its own file
        report = json.loads(Path(args.merge[0]).read_text())
        name_calibration(report["runs"])
        for path in args.merge[1:]:
            extra = name_calibration(json.loads(Path(path).read_text())["runs"])
            keys = {tuple(r[k] for k in KEY) for r in extra}
            report["runs"] = [r for r in report["runs"] if tuple(r[k] for k in KEY) not in keys] + extra
        report.update(band_label=args.band_label, bands=bands(report["runs"], args.band_label))
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        return

    tok = load_variant(RESULTS / MODEL / "dense")[1]
    calib = load_calibration(RESULTS / MODEL / "calib" / f"{args.calibration}.safetensors")
    evals = eval_windows(read_texts(RESULTS / "corpora/wiki/eval.jsonl"), tok, 512, args.windows, "auto")
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    name_calibration(report["runs"])
    for criterion in args.criteria:
        for pattern in args.patterns:
            for threads in args.threads:
                for order in args.orders:
                    row = {"label": args.label, "calibration": args.calibration, **run(criterion, pattern, threads, order, calib, evals)}
                    print(json.dumps(row), flush=True)
                    report["runs"] = [r for r in report["runs"] if tuple(r[k] for k in KEY) != tuple(row[k] for k in KEY)] + [row]
                    report.update(
                        model=f"{MODEL} (float32)", calibration="per run and band (<corpus>-n<samples>-l<tokens>-s<seed>)",
                        eval=f"{args.windows} x 512 held-out Wikipedia windows", stream="sequential", batch_size=8,
                        machine=f"{platform.machine()}, torch {torch.__version__}, timings on a shared machine (not results)",
                        band_label=args.band_label, bands=bands(report["runs"], args.band_label),
                    )
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
