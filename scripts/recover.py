"""Reconstruct or retrain a pruned variant (masks kept exactly); store it as changes to the pruned one."""
import json
from pathlib import Path

from pruneflow.artifacts import artifact_folder
from pruneflow.calibration import load_calibration
from pruneflow.experiments import Recovery
from pruneflow.io import read_json
from pruneflow.recovery import recover
from pruneflow.runtime import job, resolve_device, runtime_settings
from pruneflow.variants import load_variant, load_variant_with_masks, write_variant

rt = runtime_settings(snakemake.config)
spec = json.loads(snakemake.params.spec)
recovery = Recovery(**spec["recovery"])
pruned_dir = Path(snakemake.input.pruned)
with job(snakemake.log[0], snakemake.threads, seed=spec["settings"].get("seed", 0)):
    device = resolve_device(rt["device"])
    dense, _ = load_variant(snakemake.input.dense)
    model, tok, masks = load_variant_with_masks(pruned_dir)
    calib = load_calibration(snakemake.input.calib)
    total = sum(p.numel() for p in model.parameters())
    result = recover(dense, model, masks, calib, recovery, spec["settings"], device)
    del dense  # writing rebuilds the pruned parent to find what changed
    # retraining reports its trainable set; reconstruction the largest set held at once
    trainable = result.get("trainable_params", result.get("max_trainable_params"))
    summary = {
        **read_json(pruned_dir / "summary.json"),
        "recovery": recovery.spec,
        "settings": spec["settings"],
        "trainable_params": trainable,
        "trainable_fraction": trainable / total,
        "unavailable": result.get("unavailable", []),
        "notes": result.get("notes", []),
    }
    with artifact_folder(snakemake.output[0]) as out:
        write_variant(out, model, tok, pruned_dir, Path(snakemake.output[0]), summary)
