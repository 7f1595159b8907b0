"""Benchmark: bytes each kind of variant adds to the disk, and load time of compact variants vs a full copy.

Builds, in a scratch folder, the dense variant and one variant of each kind with the library, as the
workflow's jobs write them: magnitude and Wanda (masks only), SparseGPT (masks + kept values), a
reconstructed variant (simulated: every kept weight and every norm changed, the most a recovery can
change), a structured variant (20% of the FFN neurons removed, LIAR: the kept indices and the repaired projections), and, for comparison, a
full copy of the Wanda variant (the export: a plain Hugging Face folder). Calibration: random tokens
(the contents do not change the sizes). Each load is timed in a fresh process (after the imports,
first load of the process, as an evaluation job pays it) and again warm in the same process, each
until every parameter has been read once (the dense weights are mapped lazily); the cases take turns
and the median over ``--repeats`` rounds is reported.

Usage: .venv/bin/python bench/storage.py [--model smollm2|tiny|/path/to/hf-folder] [--repeats 5]
Writes bench/results/storage-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pruneflow.core.artifacts import artifact_folder  # noqa: E402
from pruneflow.core.mask_files import save_masks  # noqa: E402
from pruneflow.core.models import load_source  # noqa: E402
from pruneflow.core.stream import load_variant, load_variant_with_masks  # noqa: E402
from pruneflow.core.writer import (  # noqa: E402
    export_variant,
    stored_bytes,
    write_full_variant,
    write_masked_variant,
    write_structured_variant,
    write_variant,
)
from pruneflow.prune.criteria import get_criterion  # noqa: E402
from pruneflow.prune.dense_stream import masks_from_scores, model_scores  # noqa: E402
from pruneflow.prune.masks import parse_pattern  # noqa: E402
from pruneflow.prune.sequential import prune_model  # noqa: E402
from pruneflow.structured.prune import prune_structured  # noqa: E402

SOURCES = {"smollm2": {"source": "smollm2-gguf"}, "tiny": {"source": "tiny"}}

LOADER = r'''
import json, sys, time
import torch
from transformers import AutoModelForCausalLM
from pruneflow.core.stream import load_variant
kind, folder, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
def load():
    # until the model is usable: loading maps the dense weights lazily, so every parameter is read once
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto") if kind == "hf" else load_variant(folder)[0]
    with torch.no_grad():
        for p in model.parameters():
            p.sum()
    return time.perf_counter() - start
print(json.dumps({"first": load(), "warm": load()}))
'''


def build_variants(spec: dict, root: Path, nsamples: int, seqlen: int) -> dict[str, Path]:
    model, tok = load_source(spec)
    dense = root / "dense"
    with artifact_folder(dense) as out:
        write_full_variant(out, model, tok, {"variant": "dense"})
    calib = torch.randint(0, model.config.vocab_size, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))
    folders = {"dense": dense}

    def pruned(name, criterion, pattern):
        model, tok = load_variant(dense)
        final = root / "pruned" / name
        with artifact_folder(final) as out:
            crit = get_criterion(criterion)
            for i, masks in prune_model(model, crit, parse_pattern(pattern), calib if crit.needs_calibration else None, "sequential", 8):
                save_masks(out / "masks", i, masks)
            write_variant(out, model, tok, dense, final, {}, requested=parse_pattern(pattern).sparsity)
        folders[name] = final

    model, _ = load_variant(dense)
    final = root / "pruned" / "magnitude_masks_only"
    with artifact_folder(final) as out:  # as prune_by_score writes it
        crit = get_criterion("magnitude")
        for i, scores in model_scores(model, crit):
            save_masks(out / "masks", i, masks_from_scores(scores, parse_pattern(0.5), crit))
        write_masked_variant(out, model, dense, final, {}, requested=0.5)
    folders["magnitude"] = final
    pruned("wanda", "wanda", 0.5)
    pruned("sparsegpt", "sparsegpt", 0.5)

    model, tok, masks = load_variant_with_masks(folders["wanda"])
    with torch.no_grad():  # a recovery that changes every kept weight and every norm
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name and "lm_head" not in name:
                p.add_(1e-3 * torch.randn(p.shape, generator=g).to(p.dtype) * (p != 0))
            elif p.dim() == 1:
                p.add_(1e-3)
    final = root / "recovered" / "reconstructed"
    with artifact_folder(final) as out:
        write_variant(out, model, tok, folders["wanda"], final, {})
    folders["reconstructed"] = final

    model, tok = load_variant(dense)
    selections = {}
    summary = prune_structured(model, calib, "neurons", 0.2, "fluctuation", "liar", 0.3, 8, selections=selections)
    final = root / "structured" / "neurons0.2-liar"
    with artifact_folder(final) as out:
        write_structured_variant(out, model, tok, dense, final, summary, selections)
    folders["structured_neurons0.2"] = final

    export_variant(folders["wanda"], root / "export" / "wanda")
    folders["full_copy_of_wanda"] = root / "export" / "wanda"
    return folders


def time_loads(cases: dict[str, tuple[str, Path]], repeats: int, threads: int) -> dict:
    """Median load times per case; the cases take turns, so a busy spell on the machine hits them all."""
    runs = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (kind, folder) in cases.items():
            out = subprocess.run([sys.executable, "-c", LOADER, kind, str(folder), str(threads)], capture_output=True, text=True,
                                 check=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {name: {key: statistics.median(r[key] for r in rs) for key in ("first", "warm")} | {"runs": rs} for name, rs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny, or a Hugging Face folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each load (jobs run with 1)")
    parser.add_argument("--nsamples", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    spec = SOURCES.get(args.model) or {"source": "local", "path": args.model}
    name = args.model if args.model in SOURCES else Path(args.model).name
    out = Path(args.out or ROOT / f"bench/results/storage-{name}.json")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_variants(spec, Path(tmp), args.nsamples, args.seqlen)
        model, _ = load_variant(folders["dense"])
        sizes = {kind: stored_bytes(folder) for kind, folder in folders.items()}
        loads = time_loads({
            "dense": ("variant", folders["dense"]),
            "wanda_compact": ("variant", folders["wanda"]),
            "sparsegpt_compact": ("variant", folders["sparsegpt"]),
            "reconstructed_compact": ("variant", folders["reconstructed"]),
            "full_copy_from_pretrained": ("hf", folders["full_copy_of_wanda"]),
        }, args.repeats, args.threads)
    result = {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(model.dtype).removeprefix("torch."),
        "bytes": sizes,
        "bytes_relative_to_dense": {k: v / sizes["dense"] for k, v in sizes.items()},
        "load_seconds": loads,
        "wanda_load_vs_dense": {k: loads["wanda_compact"][k] / loads["dense"][k] for k in ("first", "warm")},
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "note": (
            "load times depend on the page cache and on other work on the machine; compare ratios taken in one run")},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("bytes", "wanda_load_vs_dense")}, indent=2))
    print({k: {m: round(v[m], 3) for m in ("first", "warm")} for k, v in loads.items()})


if __name__ == "__main__":
    main()
