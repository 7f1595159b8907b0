"""Benchmark: wall time and peak memory of each pruning criterion on SmolLM2-135M.

Each measurement runs in a fresh process (clean peak RSS) on the workflow's own artifacts:
the dense model and the default calibration samples (run the default pipeline first).
Times are also given as multiples of one dense forward pass over the calibration samples,
the floor for any method that needs activations.

Usage: .venv/bin/python bench/criteria.py [--threads 2] [--calib results/.../brown-n32-l256-s0.safetensors]
Writes bench/results/criteria.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "dense_forward": "forward",
    "magnitude": ("magnitude", "0.5", None),
    "wanda_sequential": ("wanda", "0.5", "sequential"),
    "sparsegpt_sequential": ("sparsegpt", "0.5", "sequential"),
    "activation_cache": "cache",
    "wanda_dense_scores_masks": ("wanda", "0.5", "cache"),
    "sparsegpt_dense_from_cache": ("sparsegpt", "0.5", "cache"),
}

WORKER = r'''
import json, sys, time, torch
from pruneflow.core.artifacts import artifact_folder
from pruneflow.data.calibration import load_calibration
from pruneflow.core.activations import capture_block_inputs, run_block
from pruneflow.core.architectures import architecture_of
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.dense_stream import build_activation_cache, masks_from_scores, model_scores, apply_masks, prune_from_cache
from pruneflow.prune.masks import parse_pattern
from pruneflow.core.models import load_model
from pruneflow.prune.sequential import prune_model
from pruneflow.core.runtime import peak_memory_mb

case, model_dir, calib_path, cache_dir, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
model, _ = load_model(model_dir)
calib = load_calibration(calib_path)
base = peak_memory_mb()
start = time.perf_counter()
if case == "forward":
    with torch.no_grad():
        for chunk in calib.split(8):
            model(chunk, use_cache=False)
elif case == "cache":
    with artifact_folder(cache_dir) as out:  # as the workflow writes it: with a manifest
        build_activation_cache(model, calib, out, batch_size=8)
else:
    name, pattern, stream = case
    crit, pat = get_criterion(name), parse_pattern(pattern)
    if stream == "cache" and name == "sparsegpt":
        for _ in prune_from_cache(model, crit, pat, cache_dir):
            pass
    elif stream == "cache":
        apply_masks(model, {i: masks_from_scores(s, pat, crit) for i, s in model_scores(model, crit, cache_dir)})
    else:
        for _ in prune_model(model, crit, pat, calib if crit.needs_calibration else None, stream, batch_size=8):
            pass
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_memory_mb": peak_memory_mb(), "model_loaded_mb": base}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "results/smollm2-135m/dense/model"))
    parser.add_argument("--calib", default=str(ROOT / "results/smollm2-135m/calib/brown-n32-l256-s0.safetensors"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/criteria.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for label, case in CASES.items():
            spec = json.dumps([case, args.model, args.calib, cache, args.threads])
            proc = subprocess.run([sys.executable, "-c", WORKER, spec], capture_output=True, text=True, check=True)
            results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(label, results[label], file=sys.stderr)
    forward = results["dense_forward"]["seconds"]
    for r in results.values():
        r["dense_forwards"] = r["seconds"] / forward
    from pruneflow.data.calibration import load_calibration

    shape = list(load_calibration(args.calib).shape)
    report = {
        "model": "SmolLM2-135M (float32)",
        "calibration": {"nsamples": shape[0], "seqlen": shape[1]},
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, torch threads={args.threads}",
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| step | seconds | × dense forward | peak RSS (MB) |\n|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['seconds']:.1f} | {r['dense_forwards']:.2f} | {r['peak_memory_mb']:.0f} |")


if __name__ == "__main__":
    main()
