"""GPU path check: the same pruning and repair on ``cuda`` and on the CPU, for a few tiny families.

Records, per family: Wanda and SparseGPT mask agreement between the devices (float order differs,
so a few ties may flip), sublayer reconstruction's loss before/after on the GPU, and a structured
LIAR run on the GPU. Usage (a CUDA machine): python bench/gpu_check.py. Writes bench/results/gpu_check.json.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from families import build, token_ids  # noqa: E402
from pruneflow.core.sparsity import check_masks_kept  # noqa: E402
from pruneflow.evaluate.perplexity import perplexity  # noqa: E402
from pruneflow.prune.criteria import get_criterion  # noqa: E402
from pruneflow.prune.masks import parse_pattern  # noqa: E402
from pruneflow.prune.sequential import prune_model  # noqa: E402
from pruneflow.recover.reconstruct import reconstruct_model  # noqa: E402
from pruneflow.recover.train import TrainConfig  # noqa: E402
from pruneflow.structured.prune import prune_structured  # noqa: E402


def agreement(a: dict, b: dict) -> float:
    same = total = 0
    for i in a:
        for name in a[i]:
            same += int((a[i][name] == b[i][name]).sum())
            total += a[i][name].numel()
    return same / total


def main(gpu: str = "cuda") -> None:
    if gpu == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_check.py needs a CUDA GPU")
    calib = token_ids(8, 64, seed=1)
    out = {"gpu": torch.cuda.get_device_name() if gpu == "cuda" else "cpu (smoke run)", "torch": torch.__version__, "families": {}}
    for family in ("llama", "gemma2", "qwen3_moe", "gpt2"):
        record = {}
        for criterion in ("wanda", "sparsegpt"):
            masks = {}
            for device in ("cpu", gpu):
                model = build(family)
                masks[device] = dict(prune_model(model, get_criterion(criterion), parse_pattern(0.5), calib, "sequential", 4, device))
            record[f"{criterion}_mask_agreement"] = agreement(masks["cpu"], masks[gpu])
        dense, pruned = build(family), build(family)
        keep = dict(prune_model(pruned, get_criterion("wanda"), parse_pattern(0.5), calib, "sequential", 4, gpu))
        result = reconstruct_model(dense, pruned, keep, calib, "sublayer", cfg=TrainConfig(lr=1e-3), device=gpu)
        check_masks_kept(pruned.cpu(), keep)
        record["sublayer_loss"] = [result["loss_before"], result["loss_after"]]
        model = build(family)
        try:
            summary = prune_structured(copy.deepcopy(model), calib, "neurons", 0.25, "fluctuation", "liar", 0.1, 4, gpu)
            record["structured_liar_params"] = [summary["params_before"], summary["params_after"]]
        except ValueError as err:
            record["structured_liar_params"] = str(err)[:120]
        record["perplexity_after_recon"] = perplexity(pruned, token_ids(2, 32, seed=3), 2, gpu)["perplexity"]
        out["families"][family] = record
        print(family, json.dumps(record))
    path = ROOT / "bench" / "results" / ("gpu_check.json" if gpu == "cuda" else "gpu_check_smoke.json")
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cuda")
