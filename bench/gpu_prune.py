"""Benchmark: Wanda and SparseGPT (sequential, 50%) on a GPU at the papers' scale, with a model of
LLaMA-7B's block shape (random weights: time and memory do not depend on the values).

The model lives on the CPU and one block at a time moves to the GPU (as in every pruning job), so the
per-block time and the GPU's peak memory are what a full 32-block LLaMA-7B run sees; ``--layers``
blocks are run and the total is extrapolated to 32. The peak is compared with docs/scale.md's formula
peak ≈ W + 2X + G + S (W one block's weights, X one block's inputs, G the float32 Gram matrices,
S SparseGPT's working copy). Usage (a CUDA machine):
  python bench/gpu_prune.py --layers 4 --nsamples 128 --seqlen 2048 --dtype bfloat16
Writes bench/results/gpu_prune.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model

ROOT = Path(__file__).resolve().parents[1]


def formula_bytes(h: int, f: int, tokens: int, b: int) -> dict:
    """docs/scale.md's peak-memory terms for one LLaMA block on the device."""
    terms = {"W": b * (4 * h * h + 3 * h * f), "X": 2 * b * tokens * h, "G": 4 * (3 * h * h + f * f), "S": 4 * (h * f + f * f)}
    return {**terms, "total": sum(terms.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--methods", default="wanda,sparsegpt")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_prune.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_prune.py needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_attention_heads=args.heads,
                         num_key_value_heads=args.heads, num_hidden_layers=args.layers, vocab_size=32000,
                         max_position_embeddings=args.seqlen)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device("cpu"):
        model = LlamaForCausalLM(config).to(dtype).eval()
    init_s = time.perf_counter() - start
    calib = torch.randint(0, 32000, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    results = {}
    for method in args.methods.split(","):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        blocks = []
        for _ in prune_model(model, get_criterion(method), parse_pattern(0.5), calib, "sequential", args.batch_size, "cuda"):
            torch.cuda.synchronize()
            blocks.append(time.perf_counter() - start - sum(blocks))
        total = time.perf_counter() - start
        results[method] = {
            "seconds": total,
            "seconds_per_block": blocks,
            "seconds_32_blocks_extrapolated": blocks[0] + (total - blocks[0]) / max(1, len(blocks) - 1) * 31 if len(blocks) > 1 else total * 32,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9,
        }
        model.load_state_dict(state)
        print(method, json.dumps(results[method]))
    b = torch.finfo(dtype).bits // 8
    out = {
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
        "shape": {"hidden": args.hidden, "intermediate": args.intermediate, "heads": args.heads, "layers_run": args.layers},
        "calibration": {"nsamples": args.nsamples, "seqlen": args.seqlen}, "dtype": args.dtype, "init_seconds": init_s,
        "formula_gb": {k: v / 1e9 for k, v in formula_bytes(args.hidden, args.intermediate, args.nsamples * args.seqlen, b).items()},
        "methods": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["formula_gb"]))


if __name__ == "__main__":
    main()
