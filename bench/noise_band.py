"""Noise band and exact arbiter: how far a float-sensitive table entry moves under what a user meets.

Every entry of the workflow's ``wanda_table`` (magnitude, SparseGPT and Wanda at 50%, 4:8, 2:4, sequential) on
SmolLM2-135M with the default's calibration and perplexity windows (read from config.yaml), pruned once with
the workflow's settings (1 thread, samples in order, 8 per batch, float32: the table's number) and once per
perturbation: ``threads`` (2), ``order`` (samples reversed), ``batch`` (1 and 16 per forward), ``float64``
(model, statistics and solver in float64: the exact arbiter) and ``seeds`` (other calibration draws, the
statistical spread); a process started with ``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`` records its
runs as ``isa: avx2`` (an AVX2-only CPU's kernels on this machine). Each run records its perplexity, its prune time and how many keep-masks agree with
the workflow's run (same calibration; the other seeds' runs: with seed 0's).

``bands`` gives, per calibration, criterion and pattern: ``float_pct`` (spread, max/min − 1 in %, over the
float-order runs of that calibration), ``seed_pct`` (over the calibration seeds) and ``band_pct`` (over all of
them: the band the tables and the claims ledger read), with ``float64`` beside the float32 number and whether
the band covers it, the references' and another machine's result (``bench/results/other_machine.json``).
The reference implementations run from checkouts given on the command line (never part of PruneFlow):
``--wanda-ref DIR`` (locuslab/wanda: its Wanda and SparseGPT) and ``--sparsegpt-ref DIR`` (IST-DASLab/sparsegpt),
on the same model, calibration windows and evaluation windows as the entry (float32, both sample orders); each
run records which reference and which version. A reference's result is a number a user meets, so it enters the
band like any perturbation (``references``: each result and its distance from the float32 number). Without a
checkout the benchmark says which reference it did not run. Every run records its date, the commit measured and
its CPU; the JSON's ``tables_cpu`` names the CPU that made the tables' numbers: its workflow-settings run is an
entry's ``float32``, a run on another CPU one more perturbation.
``--timing-only``: PruneFlow's and the reference's prune time only, interleaved, to bench/results/prune_speed.json.

Needs the workflow's dense model, calibration samples (the seeds' too: ``snakemake --cores 2
results/smollm2-135m/calib/brown-n16-l256-s{1,2}.safetensors``) and evaluation corpus.
Usage: PYTHONPATH=src .venv/bin/python bench/noise_band.py [--criteria ...] [--patterns ...] [--perturb ...]
       [--wanda-ref DIR] [--sparsegpt-ref DIR]   |   --timing-only --wanda-ref DIR [--repeats 3]   |   --merge A.json ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import band_runs as br  # noqa: E402

OUT = br.ROOT / "bench/results/noise_band.json"
OTHER_MACHINE = br.ROOT / "bench/results/other_machine.json"
KEY = ("label", "impl", "source", "cpu", "calibration", "criterion", "pattern", "threads", "order", "batch", "dtype", "isa")
RUN_DEFAULTS = {"impl": "pruneflow", "threads": 1, "order": "forward", "batch": 8, "dtype": "float32", "isa": "native"}
# The CPU's vector kernels: ATEN_CPU_CAPABILITY=avx2 (torch's kernels) with MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL's) set
# before the process starts runs this machine as an AVX2-only one would (recorded as the run's isa).
ISA = os.environ.get("ATEN_CPU_CAPABILITY", "native").lower()
CPU = br.machine()["cpu"]
OLD_CALIBRATION = "brown-n32-l256-s0"  # runs recorded before runs named their calibration
OLD_REFERENCE = "locuslab/wanda"  # reference runs recorded before runs named their reference
PERTURBATIONS = {"threads": [{"threads": 2}], "order": [{"order": "reversed"}], "batch": [{"batch": 1}, {"batch": 16}],
                 "float64": [{"dtype": "float64"}]}


def complete(runs: list[dict]) -> list[dict]:
    """``runs`` with every field (runs recorded before a field existed had its default)."""
    for r in runs:
        r.setdefault("calibration", OLD_CALIBRATION)
        for k, v in RUN_DEFAULTS.items():
            r.setdefault(k, v)
        r.setdefault("source", "pruneflow" if r["impl"] == "pruneflow" else OLD_REFERENCE)
        r.setdefault("cpu", "not recorded")
    return runs


def family(calibration: str) -> str:
    """The calibration without its seed: brown-n16-l256-s0 → brown-n16-l256 (its seeds are one family)."""
    return calibration.rsplit("-s", 1)[0]


def is_default(r: dict, cpu: str | None = None) -> bool:
    """A PruneFlow run with the workflow's settings (on ``cpu``, when given)."""
    return all(r[k] == v for k, v in RUN_DEFAULTS.items()) and cpu in (None, r["cpu"])


def setting_name(r: dict, cpu: str | None = None) -> str:
    """What a run changed from the workflow's settings on ``cpu``: "threads=2,isa=avx2", or "workflow"."""
    changed = [f"{k}={r[k]}" for k, v in RUN_DEFAULTS.items() if k != "impl" and r[k] != v]
    changed += [f"cpu={r['cpu']}"] if cpu not in (None, r["cpu"]) else []
    return ",".join(changed) or "workflow"


def workflow_run(rs: list[dict], cpu: str | None) -> dict | None:
    """The workflow-settings run among ``rs``: the one on ``cpu`` (the machine that made the tables) if measured."""
    return next((r for r in rs if is_default(r, cpu)), None) or next((r for r in rs if is_default(r)), None)


def spread(values: list[float]) -> float:
    return 100 * (max(values) / min(values) - 1)


def within(value: float | None, centre: float, band: float | None, digits: int | None = None) -> bool | None:
    """Is ``value`` within ``band`` % of ``centre``? A value quoted to ``digits`` significant digits may be off by
    half its last digit."""
    if value is None or band is None:
        return None
    rounding = 0.5 * 10 ** (math.floor(math.log10(abs(value))) - digits + 1) / abs(value) if digits else 0.0
    return abs(value / centre - 1) <= band / 100 + rounding + 1e-12


def bands(runs: list[dict], band_label: str, other: dict | None = None, tables_cpu: str | None = None) -> list[dict]:
    """Per (calibration, criterion, pattern) of the PruneFlow runs: each label's spread at that calibration, and
    for ``band_label``: the float-order, seed and whole band in % over PruneFlow's runs and the references' (a band
    needs two runs: one run is no spread), the float32 (workflow settings) and float64 numbers, each reference's
    result, and what the band covers. ``tables_cpu``: the CPU whose workflow-settings run the tables show (the
    float32 number); a run on another CPU is one more perturbation."""
    complete(runs)
    ours = [r for r in runs if r["impl"] == "pruneflow"]
    references = [r for r in runs if r["impl"] == "reference" and r["label"] == band_label]
    out = []
    for calibration, criterion, pattern in dict.fromkeys((r["calibration"], r["criterion"], r["pattern"]) for r in ours):
        same = [r for r in ours if (r["criterion"], r["pattern"]) == (criterion, pattern)]
        here = [r for r in same if r["calibration"] == calibration]
        entry = {"model": br.MODEL, "calibration": calibration, "method": criterion, "pattern": pattern,
                 "stream": "sequential" if criterion != "magnitude" else "-", "spread_pct": {}}
        for label in dict.fromkeys(r["label"] for r in here):
            values = [r["perplexity"] for r in here if r["label"] == label]
            entry["spread_pct"][label] = {"min": min(values), "max": max(values), "runs": len(values), "pct": spread(values)}
        mine = [r for r in here if r["label"] == band_label]
        kin = [r for r in same if r["label"] == band_label and family(r["calibration"]) == family(calibration)]
        seeds = {}
        for r in kin:  # a seed's number: its workflow-settings run, else the median of its runs
            seeds.setdefault(r["calibration"], []).append(r)
        seed_values = [(workflow_run(rs, tables_cpu) or {}).get("perplexity", statistics.median(r["perplexity"] for r in rs))
                       for rs in seeds.values()]
        if mine:  # each float-order run by what it changed from the workflow's settings
            entry["runs"] = {setting_name(r, tables_cpu): r["perplexity"] for r in mine}
        if len(mine) >= 2:
            entry["float_pct"] = spread([r["perplexity"] for r in mine])
        if len(seed_values) >= 2:
            entry["seed_pct"] = spread(seed_values)
            entry["seeds"] = len(seed_values)
        refs = [r for r in references if (r["criterion"], r["pattern"]) == (criterion, pattern) and family(r["calibration"]) == family(calibration)]
        if len(kin) >= 2:
            entry["pruneflow_pct"] = spread([r["perplexity"] for r in kin])
        if len(kin) + len(refs) >= 2:  # the references' results are numbers a user meets: inside the band
            entry["band_pct"] = spread([r["perplexity"] for r in kin + refs])
        table = (workflow_run(mine, tables_cpu) or {}).get("perplexity")
        f64 = next((r["perplexity"] for r in mine if setting_name(r, tables_cpu) == "dtype=float64"), None)
        if table is not None:
            entry["float32"] = table
            covers = {}
            if f64 is not None:
                entry.update(float64=f64, float32_vs_float64_pct=100 * (table / f64 - 1))
                covers["float64"] = within(f64, table, entry.get("band_pct"))
            here_refs = [r for r in refs if r["calibration"] == calibration]
            if here_refs:
                entry["references"] = [{"source": r["source"], "version": r.get("version", "?"), "order": r["order"],
                                        "perplexity": r["perplexity"], "vs_float32_pct": 100 * (r["perplexity"] / table - 1)}
                                       for r in here_refs]
                covers["reference"] = all(within(r["perplexity"], table, entry.get("band_pct")) for r in here_refs)
            theirs = (other or {}).get("entries", {}).get(f"{calibration} {criterion} {pattern}")
            if theirs is not None:
                entry["other_machine"] = theirs
                covers["other_machine"] = within(theirs, table, entry.get("band_pct"), other.get("digits"))
            if covers and "band_pct" in entry:
                entry["band_covers"] = covers
        out.append(entry)
    return out


def write(report: dict, out: Path, band_label: str) -> None:
    other = json.loads(OTHER_MACHINE.read_text()) if OTHER_MACHINE.is_file() else None
    report.update(band_label=band_label, bands=bands(report["runs"], band_label, other, report.get("tables_cpu")))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def plan(criteria, patterns, perturb, seeds, base_seed) -> list[tuple[str, str, dict, int]]:
    """(criterion, pattern, settings, seed) of every run, the workflow-settings run of each entry first."""
    runs = []
    for criterion in criteria:
        for pattern in patterns:
            runs.append((criterion, pattern, {}, base_seed))
            float_order = [p for name in perturb if name in PERTURBATIONS for p in PERTURBATIONS[name]]
            if criterion == "magnitude":  # no calibration: only the thread count and float64 can move it
                float_order = [p for p in float_order if set(p) <= {"threads", "dtype"}]
            runs += [(criterion, pattern, p, base_seed) for p in float_order]
            if "seeds" in perturb and criterion != "magnitude":
                runs += [(criterion, pattern, {}, s) for s in seeds]
    return runs


def load_references(args) -> list:
    """The reference checkouts given (each one's criteria run beside PruneFlow's); says which were not given."""
    import reference_sparsegpt
    import reference_wanda

    given = [(args.wanda_ref, reference_wanda), (args.sparsegpt_ref, reference_sparsegpt)]
    for folder, module in given:
        if not folder:
            print(f"no --{module.__name__.split('_')[1]}-ref folder: {module.SOURCE} is not run", file=sys.stderr)
    return [module.load_reference(folder) for folder, module in given if folder]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="the build measured (kept apart from other builds' runs)")
    parser.add_argument("--criteria", nargs="+", default=["magnitude", "sparsegpt", "wanda"])
    parser.add_argument("--patterns", nargs="+", default=["0.5", "4:8", "2:4"])
    parser.add_argument("--perturb", nargs="*", default=[*PERTURBATIONS, "seeds"], choices=[*PERTURBATIONS, "seeds"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="calibration seeds beside config.yaml's")
    parser.add_argument("--wanda-ref", "--reference", dest="wanda_ref", metavar="DIR",
                        help="a locuslab/wanda checkout: also run its Wanda and SparseGPT")
    parser.add_argument("--sparsegpt-ref", metavar="DIR", help="an IST-DASLab/sparsegpt checkout: also run its SparseGPT")
    parser.add_argument("--timing-only", action="store_true", help="prune times only, PruneFlow and reference interleaved")
    parser.add_argument("--repeats", type=int, default=3, help="--timing-only: runs of each implementation per entry")
    parser.add_argument("--threads", type=int, default=2, help="--timing-only: torch threads")
    parser.add_argument("--band-label", default="current", help="the label whose spread is the tables' band")
    parser.add_argument("--skip-measured", action="store_true", help="skip a run this label already measured")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="only merge the runs of these files into --out")
    args = parser.parse_args()
    if args.timing_only:
        import prune_speed

        return prune_speed.main(args)
    out = args.out or OUT
    if args.merge:  # runs measured in parallel processes, each into its own file
        report = json.loads(Path(args.merge[0]).read_text())
        for path in args.merge[1:]:
            extra = complete(json.loads(Path(path).read_text())["runs"])
            keys = {tuple(r[k] for k in KEY) for r in extra}
            report["runs"] = [r for r in complete(report["runs"]) if tuple(r[k] for k in KEY) not in keys] + extra
            report.setdefault("machines", {}).update(json.loads(Path(path).read_text()).get("machines", {}))
        return write(report, out, args.band_label)
    refs = load_references(args)
    inputs = br.Inputs()
    report = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    report.update(model=br.MODEL, eval=f"{inputs.evals.shape[0]} x {inputs.evals.shape[1]} held-out Wikipedia windows",
                  stream="sequential")
    report.setdefault("machines", {})[CPU] = br.machine()  # each CPU's record, named by runs' ``cpu``
    build = br.build()  # the code this process loaded: later edits of the checkout are not what it measures
    jobs = [(None, *j) for j in plan(args.criteria, args.patterns, args.perturb, args.seeds, inputs.seed)]
    jobs += [(ref, c, p, {"order": o}, inputs.seed) for ref in refs for c in args.criteria if c in ref.criteria
             for p in args.patterns for o in ("forward", "reversed")]
    for ref, criterion, pattern, settings, seed in jobs:
        impl, source = ("reference", ref.source) if ref else ("pruneflow", "pruneflow")
        settings = {**RUN_DEFAULTS, **settings, "impl": impl, "source": source, "cpu": CPU, "isa": ISA}
        calibration = inputs.calibration_id(seed)
        key = (args.label, impl, source, CPU, calibration, criterion, pattern, *(settings[k] for k in KEY[7:]))
        if args.skip_measured and any(tuple(r[k] for k in KEY) == key for r in complete(report["runs"])):
            continue
        run = br.run(criterion, pattern, settings, inputs, seed, ref)
        row = {"label": args.label, "calibration": calibration, "criterion": criterion, "pattern": pattern, **settings,
               **({"version": ref.version} if ref else {}), **build, **run}
        print(json.dumps(row), flush=True)
        report["runs"] = [r for r in complete(report["runs"]) if tuple(r[k] for k in KEY) != tuple(row[k] for k in KEY)] + [row]
        write(report, out, args.band_label)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
