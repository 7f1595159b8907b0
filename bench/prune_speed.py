"""PruneFlow's prune time over the reference's (locuslab/wanda), side by side in one process: the timing part of
bench/noise_band.py (``--timing-only``), cheap to rerun on a quiet machine.

Per entry the two implementations alternate A B B A A B ... (``--repeats`` runs each), on the same dense model,
the default's calibration and thread count; each time is the prune alone (the model is loaded before the clock
starts; both capture their own calibration inputs). Every run stores the 1-minute load average before and
after it, the table the medians' ratio. Results merge into bench/results/prune_speed.json by (label, threads,
criterion, pattern). Usage: PYTHONPATH=src .venv/bin/python bench/noise_band.py --timing-only --wanda-ref DIR
[--criteria wanda sparsegpt] [--patterns 0.5 4:8 2:4] [--repeats 3] [--threads 2] [--label current]
"""

from __future__ import annotations

import json
import os
import statistics

import torch

import band_runs as br

OUT = br.ROOT / "bench/results/prune_speed.json"


def time_entry(criterion: str, pattern: str, inputs: br.Inputs, ref, repeats: int) -> dict:
    calib = inputs.calibration(inputs.seed)
    samples = {"pruneflow": [], "reference": []}
    for rep in range(repeats):
        order = ("pruneflow", "reference") if rep % 2 == 0 else ("reference", "pruneflow")
        for impl in order:
            model = inputs.model("float32")
            load = os.getloadavg()[0]
            seconds = br.prune(model, criterion, pattern, calib, inputs.config["runtime"]["batch_size"], ref if impl == "reference" else None)
            samples[impl].append({"seconds": seconds, "loadavg": [load, os.getloadavg()[0]]})
            del model
    median = {impl: statistics.median(s["seconds"] for s in runs) for impl, runs in samples.items()}
    return {"criterion": criterion, "pattern": pattern, "samples": samples, "median_s": median,
            "ratio": median["pruneflow"] / median["reference"]}


def main(args) -> None:
    if not args.wanda_ref:
        raise SystemExit("--timing-only compares with the reference: pass --wanda-ref DIR (a locuslab/wanda checkout)")
    torch.set_num_threads(args.threads)
    inputs, ref = br.Inputs(), br.load_reference(args.wanda_ref)
    out = args.out or OUT
    report = json.loads(out.read_text()) if out.is_file() else {"entries": []}
    rows = []
    for criterion in [c for c in args.criteria if c != "magnitude"]:  # the reference's magnitude needs a GPU
        for pattern in args.patterns:
            entry = {"label": args.label, "threads": args.threads, "calibration": inputs.calibration_id(inputs.seed),
                     **time_entry(criterion, pattern, inputs, ref, args.repeats), "machine": br.machine()}
            key = tuple(entry[k] for k in ("label", "threads", "criterion", "pattern"))
            report["entries"] = [e for e in report["entries"] if tuple(e[k] for k in ("label", "threads", "criterion", "pattern")) != key]
            report["entries"].append(entry)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1) + "\n")
            loads = [x for s in entry["samples"].values() for r in s for x in r["loadavg"]]
            rows.append(f"| {criterion} {pattern} | {entry['median_s']['pruneflow']:.1f} | {entry['median_s']['reference']:.1f} | "
                        f"{entry['ratio']:.2f} | {min(loads):.2f}-{max(loads):.2f} |")
            print(rows[-1], flush=True)
    print(f"\n{args.threads} threads, {args.repeats} runs each, {br.machine()['cpu']}\n"
          "| method, pattern | PruneFlow s | reference s | ratio | load avg |\n|---|---|---|---|---|\n" + "\n".join(rows))
