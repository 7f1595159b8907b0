"""Benchmark: wall time and peak memory of each pruning criterion on SmolLM2-135M.

Each measurement runs in a fresh process on the workflow's own artifacts: the dense model and the default
calibration samples (run the default pipeline first). Times are also given as multiples of one dense forward pass
over the calibration samples, the floor for any method that needs activations, measured side by side in the same
process (after a warm-up batch, one forward before the step and one after; their mean is the step's unit) in CPU
seconds, which other work on a shared machine changes far less than wall seconds (both are recorded). Peak memory
is the step's own (the kernel's peak RSS is reset after the first forward).

Usage: .venv/bin/python bench/criteria.py [--threads 2] [--calib results/.../brown-n32-l256-s0.safetensors]
[--cases NAME ...]. Writes bench/results/criteria.json; with --cases only those steps are measured again and the
others keep their recorded numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {  # (criterion or solver, pattern, stream, refinement) or a step of its own
    "dense_forward": "forward",
    "magnitude": ("magnitude", "0.5", None, None),
    "wanda_sequential": ("wanda", "0.5", "sequential", None),
    "sparsegpt_sequential": ("sparsegpt", "0.5", "sequential", None),
    "activation_cache": "cache",
    "wanda_dense_scores_masks": ("wanda", "0.5", "cache", None),
    "sparsegpt_dense_from_cache": ("sparsegpt", "0.5", "cache", None),
    "ria_sequential": ("ria", "0.5", "sequential", None),
    "wanda_dsnot_sequential": ("wanda", "0.5", "sequential", "dsnot"),
    "alps_sequential": ("alps", "0.5", "sequential", None),
    "alphapruning_allocation": "alphapruning",
}

WORKER = r'''
import json, re, sys, time, torch
from pruneflow.core.artifacts import artifact_folder
from pruneflow.data.calibration import load_calibration
from pruneflow.prune.allocation import block_sizes
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.dense_stream import build_activation_cache, masks_from_scores, model_scores, apply_masks, prune_from_cache
from pruneflow.prune.masks import parse_pattern
from pruneflow.core.stream import load_variant
from pruneflow.prune.sequential import prune_model
from pruneflow.spec import registry

case, model_dir, calib_path, cache_dir, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
model, _ = load_variant(model_dir)  # the dense variant as the workflow stores it
calib = load_calibration(calib_path)


def rss_mb(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


def forward(samples=None):
    start = time.process_time()
    with torch.no_grad():
        for chunk in calib[:samples].split(8):
            model(chunk, use_cache=False)
    return time.process_time() - start


def step():
    if case == "forward":
        return forward()
    if case == "cache":
        with artifact_folder(cache_dir) as out:  # as the workflow writes it: with a manifest
            build_activation_cache(model, calib, out, batch_size=8)
        return
    if case == "alphapruning":
        registry.get("allocation", case).load()(model, None, 0.5, block_sizes(model))
        return
    name, pattern, stream, refinement = case
    crit, pat = get_criterion(name, refinement=refinement and (refinement, {})), parse_pattern(pattern)
    if stream == "cache" and registry.find(name, ("criterion", "solver")).kind == "solver":
        for _ in prune_from_cache(model, crit, pat, cache_dir):
            pass
    elif stream == "cache":
        apply_masks(model, {i: masks_from_scores(s, pat, crit) for i, s in model_scores(model, crit, cache_dir)})
    else:
        for _ in prune_model(model, crit, pat, calib if crit.needs_calibration else None, stream, batch_size=8):
            pass


base = rss_mb("VmRSS")  # the model loaded
forward(8)  # warm-up on one batch: the first pass pays one-off costs (allocations, thread pool)
before = forward()
open("/proc/self/clear_refs", "w").write("5")  # the peak RSS from here on: the step's own
start, cpu = time.perf_counter(), time.process_time()
step()
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = rss_mb("VmHWM")
after = forward()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_memory_mb": peak, "model_loaded_mb": base,
                  "forward_cpu_seconds": [before, after]}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "results/smollm2-135m/dense"))
    parser.add_argument("--calib", default=str(ROOT / "results/smollm2-135m/calib/brown-n32-l256-s0.safetensors"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), help="measure only these steps again")
    parser.add_argument("--out", default=str(ROOT / "bench/results/criteria.json"))
    args = parser.parse_args()
    out = Path(args.out)
    report = json.loads(out.read_text()) if args.cases and out.is_file() else {"results": {}}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as cache:
        for label in args.cases or CASES:
            if CASES[label] == "cache" or (isinstance(CASES[label], tuple) and CASES[label][2] == "cache"):
                needs_cache = not (Path(cache) / "manifest.json").is_file()
                if needs_cache and label != "activation_cache":  # a step from the cache needs one built first
                    _run("cache", args, cache)
            result = _run(CASES[label], args, cache)
            result["dense_forwards"] = result["cpu_seconds"] / (sum(result["forward_cpu_seconds"]) / 2)
            result["threads"] = args.threads
            report["results"][label] = result
            load.append(os.getloadavg()[0])
            print(label, result, file=sys.stderr)
    from pruneflow.data.calibration import load_calibration

    shape = list(load_calibration(args.calib).shape)
    report.update({"model": "SmolLM2-135M (float32)", "calibration": {"nsamples": shape[0], "seqlen": shape[1]}})
    if not args.cases:
        report.update({"threads": args.threads, "machine": f"{platform.processor() or platform.machine()}, torch threads={args.threads}"})
    report.setdefault("runs", []).append({
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "threads": args.threads,
        "steps": list(args.cases or CASES), "load_average_1min": [round(x, 2) for x in load],
        "unit": "each step's CPU seconds over the mean of two dense forwards' in its own process, before and after it"})
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("| step | seconds | × dense forward | peak RSS (MB) |\n|---|---|---|---|")
    for label, r in report["results"].items():
        print(f"| {label} | {r['seconds']:.1f} | {r['dense_forwards']:.2f} | {r['peak_memory_mb']:.0f} |")


def _run(case, args, cache) -> dict:
    spec = json.dumps([case, args.model, args.calib, cache, args.threads])
    proc = subprocess.run([sys.executable, "-c", WORKER, spec], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"bench/criteria.py: step {case} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
