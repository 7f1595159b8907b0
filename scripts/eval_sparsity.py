"""Measured sparsity of every prunable matrix; fails if a variant misses its requested ratio or
if any weight its masks prune is not exactly zero (after reconstruction or retraining)."""
from pathlib import Path

from pruneflow.evaluate import check_masks_kept, check_sparsity, measured_sparsity
from pruneflow.io import read_json, write_json
from pruneflow.masks_io import load_block_masks
from pruneflow.models import load_model
from pruneflow.runtime import job

variant = Path(snakemake.input.model)
with job(snakemake.log[0], snakemake.threads):
    model, _ = load_model(variant / "model")
    result = measured_sparsity(model)
    summary = read_json(variant / "summary.json")
    if "sparsity" in summary:
        result["requested"] = summary["sparsity"]
        if "recovery" not in summary:  # recovered weights may add zeros, never lose the masked ones
            check_sparsity(result, summary["sparsity"])
    if (variant / "masks").is_dir():
        files = sorted((variant / "masks").glob("block*.safetensors"))
        result["masked_weights_checked"] = check_masks_kept(model, {i: load_block_masks(f) for i, f in enumerate(files)})
write_json(snakemake.output[0], result)
