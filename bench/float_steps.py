"""Which float32 step of SparseGPT's sequential prune moves the result most, and does a cheap fix bring float32 to
the float64 answer? (issue 27, item 4)

SparseGPT on SmolLM2-135M with the default's calibration, each entry pruned with float64 in more and more steps,
the rest float32 (the workflow's settings otherwise: 1 thread, 8 samples per forward):

- ``factor64``: the inverse-Hessian factor (damped Cholesky and triangular inverse) in float64, U rounded to float32;
- ``solve64``: the factor and the OBS sweep (its running error and updates) in float64, weights rounded back;
- ``stats64``: also the Gram products (per sample XᵀX) and the column norms in float64; only the block forwards
  that feed the next block stay float32.

The float32 and full-float64 runs (forwards too) come from bench/results/noise_band.json (same calibration,
same build, label ``current``); ``float32`` is rerun here to time the variants against it in one process.
A change is adopted only if it brings every entry within 1% of float64 at
≤ 1.2× the float32 prune time. Results: bench/results/float_steps.json (runs merge by variant and pattern).
``--time-steps N`` times only the steps a variant changes (block 0's statistics pass and its 7 SparseGPT solves,
variants interleaved N times), to ``step_seconds``: whole prunes on a shared machine time the load, not the code.
Usage: PYTHONPATH=src .venv/bin/python bench/float_steps.py [--variants float32 factor64 solve64 stats64] [--patterns 0.5 4:8 2:4]
       [--time-steps N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import band_runs as br  # noqa: E402

from pruneflow.core import activations  # noqa: E402
from pruneflow.prune import criteria, sparsegpt  # noqa: E402

OUT = br.ROOT / "bench/results/float_steps.json"
BANDS = br.ROOT / "bench/results/noise_band.json"
VARIANTS = ("float32", "factor64", "solve64", "stats64")  # float32: no patch, re-timed in the same process


@contextlib.contextmanager
def float64_in(variant: str):
    """Patch the library so that the steps of ``variant`` run in float64 (undone on exit)."""
    saved = (sparsegpt.InverseHessian.__dict__["of"], activations.InputStats.add)
    make = sparsegpt.InverseHessian.of
    if variant == "factor64":  # the factor made from the float64 Gram, U rounded to float32
        def factor(gram, weight, percdamp=0.01, consume=False):
            lower_inv, dead = make(gram.double(), weight, percdamp, consume=True)
            return sparsegpt.InverseHessian(lower_inv.to(gram.dtype), dead)
        sparsegpt.InverseHessian.of = factor
    if variant in ("solve64", "stats64"):  # a float64 factor promotes sparsegpt_prune's whole sweep to float64
        sparsegpt.InverseHessian.of = lambda gram, weight, percdamp=0.01, consume=False: make(gram.double(), weight, percdamp, True)
    if variant == "stats64":
        activations.InputStats.add = lambda self, x: saved[1](self, x.double())
    try:
        yield
    finally:
        sparsegpt.InverseHessian.of, activations.InputStats.add = saved


def reference_runs(pattern: str, calibration: str) -> dict:
    """The float32 (workflow settings) and full-float64 runs of noise_band.json for this entry."""
    runs = json.loads(BANDS.read_text())["runs"] if BANDS.is_file() else []
    pick = {}
    for r in runs:
        if (r.get("label"), r.get("impl", "pruneflow"), r.get("calibration"), r["criterion"], r["pattern"], r.get("threads", 1),
                r.get("order", "forward"), r.get("batch", 8)) == ("current", "pruneflow", calibration, "sparsegpt", pattern, 1, "forward", 8):
            pick[r.get("dtype", "float32")] = {"perplexity": r["perplexity"], "prune_seconds": r["prune_seconds"]}
    return pick


def time_steps(inputs: br.Inputs, pattern: str, repeats: int) -> dict:
    """Seconds of the steps a variant changes, on block 0 of the dense model, the variants interleaved (robust on
    a shared machine where whole prunes are not): ``solve`` = SparseGPT on the block's 7 linears, ``stats`` = the
    block's statistics pass. Medians over ``repeats``; a whole prune's ratio is at most the larger step ratio."""
    import statistics
    import time

    from pruneflow.core.architectures import architecture_of
    from pruneflow.prune.masks import parse_pattern

    model = inputs.model("float32")
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    linears = arch.block_linears(block)
    captured = activations.capture_block_inputs(model, inputs.calibration(inputs.seed), inputs.config["runtime"]["batch_size"])
    head = {name: group[0] for group in activations.input_groups(arch) for name in group}
    times = {v: {"solve": [], "stats": []} for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            with float64_in(variant):
                start = time.perf_counter()
                stats, _ = activations.collect_stats(block, linears, captured, True, activations.input_groups(arch))
                times[variant]["stats"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for name, linear in linears.items():
                    criteria.sparsegpt_prune(linear.weight.detach().clone(), stats[head.get(name, name)].gram, parse_pattern(pattern))
                times[variant]["solve"].append(time.perf_counter() - start)
    median = {v: {k: statistics.median(t) for k, t in steps.items()} for v, steps in times.items()}
    return {v: {**m, **{f"{k}_vs_float32": m[k] / median["float32"][k] for k in m}} for v, m in median.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--patterns", nargs="+", default=["0.5", "4:8", "2:4"])
    parser.add_argument("--time-steps", type=int, metavar="REPEATS", help="only time the changed steps on block 0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    inputs = br.Inputs()
    if args.time_steps:
        report = json.loads(OUT.read_text()) if OUT.is_file() else {"runs": []}
        report["step_seconds"] = {p: time_steps(inputs, p, args.time_steps) for p in args.patterns}
        report["step_seconds_note"] = f"block 0, 1 thread, median of {args.time_steps} interleaved; load avg {os.getloadavg()[0]:.1f} at the end"
        print(json.dumps(report["step_seconds"], indent=1))
        OUT.write_text(json.dumps(report, indent=1) + "\n")
        return
    calibration = inputs.calibration_id(inputs.seed)
    report = json.loads(OUT.read_text()) if OUT.is_file() else {"runs": []}
    report.update(model=br.MODEL, calibration=calibration, machine=br.machine(), note="1 thread; the machine was shared")
    settings = {"threads": 1, "order": "forward", "batch": inputs.config["runtime"]["batch_size"], "dtype": "float32"}
    for pattern in args.patterns:
        for variant in args.variants:
            with float64_in(variant):
                run = br.run("sparsegpt", pattern, settings, inputs, inputs.seed)
            row = {"variant": variant, "pattern": pattern, **run}
            print(json.dumps(row), flush=True)
            report["runs"] = [r for r in report["runs"] if (r["variant"], r["pattern"]) != (variant, pattern)] + [row]
            report["entries"] = summary(report["runs"], calibration)
            OUT.write_text(json.dumps(report, indent=1) + "\n")


def summary(runs: list[dict], calibration: str) -> list[dict]:
    """Per pattern and variant: the perplexity's distance from float64 (%) and the prune time over float32's."""
    out = []
    for pattern in dict.fromkeys(r["pattern"] for r in runs):
        ref = reference_runs(pattern, calibration)
        if {"float32", "float64"} - set(ref):
            continue
        here = {r["variant"]: r for r in runs if r["pattern"] == pattern}
        f64, f32 = ref["float64"]["perplexity"], here.get("float32", ref["float32"])
        rows = [{"variant": "float32 (noise_band.json)", **ref["float32"]}] + list(here.values()) + [{"variant": "float64 (noise_band.json)", **ref["float64"]}]
        for r in rows:
            out.append({"pattern": pattern, "variant": r["variant"], "perplexity": r["perplexity"],
                        "vs_float64_pct": 100 * (r["perplexity"] / f64 - 1), "time_vs_float32": r["prune_seconds"] / f32["prune_seconds"]})
    return out


if __name__ == "__main__":
    main()
