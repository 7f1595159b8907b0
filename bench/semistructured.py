"""Benchmark: 2:4 sparse matrix multiply through torch.sparse.to_sparse_semi_structured against dense,
for the linear-layer shapes of a model (the speedup the Wanda paper's Table 6 reports).

Needs an NVIDIA GPU with sparse tensor cores (Ampere or newer); elsewhere it records that the
measurement is unavailable, and why. Usage: .venv/bin/python bench/semistructured.py [--model folder]
Writes bench/results/semistructured.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def layer_shapes(model_dir: str) -> dict[str, tuple[int, int]]:
    """[out, in] of each distinct linear layer in a block, from the model's config (no weights loaded)."""
    from transformers import AutoConfig

    from pruneflow.core.architectures import attention_shape, check_supported

    config = AutoConfig.from_pretrained(model_dir)
    check_supported(config)  # a clear error for unsupported families
    att = attention_shape(config)
    h, f = config.hidden_size, config.intermediate_size
    return {"q_proj": (att.num_heads * att.head_dim, h), "k_proj": (att.num_kv_heads * att.head_dim, h),
            "o_proj": (h, att.num_heads * att.head_dim), "gate_proj": (f, h), "down_proj": (h, f)}


def time_matmul(weight, x, repeats: int = 50) -> float:
    for _ in range(5):
        torch.nn.functional.linear(x, weight)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        torch.nn.functional.linear(x, weight)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats  # milliseconds


def measure(shapes: dict, tokens: int) -> dict:
    """Dense vs 2:4 matmul time per layer shape, with each of PyTorch's two 2:4 backends."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    from pruneflow.prune.masks import nm_mask

    out = {}
    for name, (n_out, n_in) in shapes.items():
        w = torch.randn(n_out, n_in, device="cuda", dtype=torch.float16)
        w = w * nm_mask(w.abs().float(), 2, 4).to(w.dtype)
        x = torch.randn(tokens, n_in, device="cuda", dtype=torch.float16)
        dense_ms = time_matmul(w, x)
        out[name] = {"shape": [n_out, n_in], "dense_ms": dense_ms}
        for backend, force_cutlass in (("cutlass", True), ("cusparselt", False)):
            SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
            try:
                sparse_ms = time_matmul(to_sparse_semi_structured(w), x)
                out[name][backend] = {"sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms}
            except (RuntimeError, NotImplementedError) as err:
                out[name][backend] = {"error": str(err)[:200]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "results/smollm2-135m/dense/model"))
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--out", default=str(ROOT / "bench/results/semistructured.json"))
    args = parser.parse_args()
    report = {"model": args.model, "tokens": args.tokens, "torch": torch.__version__}
    if not torch.cuda.is_available():
        report.update(available=False, reason="no CUDA device: 2:4 semi-structured kernels run only on NVIDIA GPUs (Ampere or newer)")
    elif torch.cuda.get_device_capability() < (8, 0):
        report.update(available=False, reason=f"GPU {torch.cuda.get_device_name()} has no sparse tensor cores (needs compute capability 8.0+)")
    else:
        report.update(available=True, device=torch.cuda.get_device_name(), layers=measure(layer_shapes(args.model), args.tokens))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
