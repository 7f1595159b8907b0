"""Measured sparsity of every prunable matrix; fails if a pruned variant misses its requested ratio."""
import json
from pathlib import Path

from pruneflow.evaluate import check_sparsity, measured_sparsity
from pruneflow.io import write_json
from pruneflow.models import load_model
from pruneflow.runtime import job

with job(snakemake.log[0], snakemake.threads):
    model, _ = load_model(f"{snakemake.input.model}/model")
    result = measured_sparsity(model)
    summary = json.loads((Path(snakemake.input.model) / "summary.json").read_text())
    if "sparsity" in summary:
        check_sparsity(result, summary["sparsity"])
        result["requested"] = summary["sparsity"]
write_json(snakemake.output[0], result)
