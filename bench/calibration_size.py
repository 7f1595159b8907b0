"""Ablation: SparseGPT and Wanda (sequential, 50% unstructured) on SmolLM2-135M vs calibration size.

The Wanda paper reports that Wanda needs little calibration data while SparseGPT keeps improving with
more; this checks it on the embedded model. Reads the workflow's artifacts (run the default pipeline
first): the dense model, the Brown calibration split and the held-out Wikipedia split.

Usage: .venv/bin/python bench/calibration_size.py [--sizes 32 64 128] [--seqlen 256] [--windows 16]
Writes bench/results/calibration_size.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from pruneflow.core.models import load_model
from pruneflow.data.calibration import sample_windows
from pruneflow.data.jsonl import load_texts
from pruneflow.evaluate.perplexity import eval_windows, perplexity
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(RESULTS / "smollm2-135m/dense/model"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="calibration samples")
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--windows", type=int, default=16, help="512-token evaluation windows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/calibration_size.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tok = AutoTokenizer.from_pretrained(args.model)  # the model itself is loaded fresh per run below
    docs = load_texts(RESULTS / "corpora/brown/calib.jsonl")
    evals = eval_windows(load_texts(RESULTS / "corpora/wiki/eval.jsonl"), tok, 512, args.windows, "auto")
    rows = []
    for n in args.sizes:
        calib = sample_windows(docs, tok, n, args.seqlen, seed=0)
        for criterion in ("sparsegpt", "wanda"):
            model, _ = load_model(args.model)
            start = time.perf_counter()
            for _ in prune_model(model, get_criterion(criterion), parse_pattern("0.5"), calib, "sequential", 8):
                pass
            seconds = time.perf_counter() - start
            ppl = perplexity(model, evals, 4)["perplexity"]
            rows.append({"nsamples": n, "seqlen": args.seqlen, "criterion": criterion, "perplexity": ppl, "prune_seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    report = {"model": "SmolLM2-135M (float32)", "pattern": "0.5", "stream": "sequential",
              "eval": f"{args.windows} x 512 held-out Wikipedia windows", "threads": args.threads, "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| calibration samples | SparseGPT | Wanda |\n|---|---|---|")
    for n in args.sizes:
        ppl = {r["criterion"]: r["perplexity"] for r in rows if r["nsamples"] == n}
        print(f"| {n} x {args.seqlen} | {ppl['sparsegpt']:.2f} | {ppl['wanda']:.2f} |")


if __name__ == "__main__":
    main()
