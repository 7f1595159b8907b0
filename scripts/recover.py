"""Reconstruct or retrain a pruned model (masks kept exactly); save it with its masks and costs."""
import json
import shutil
from pathlib import Path

from pruneflow.calibration import load_calibration
from pruneflow.experiments import Recovery
from pruneflow.io import atomic_path, read_json, save_model, write_json
from pruneflow.masks_io import load_block_masks
from pruneflow.models import load_model
from pruneflow.recovery import recover
from pruneflow.runtime import job, peak_memory_mb, resolve_device, runtime_settings

rt = runtime_settings(snakemake.config)
spec = json.loads(snakemake.params.spec)
recovery = Recovery(**spec["recovery"])
pruned_dir = Path(snakemake.input.pruned)
with job(snakemake.log[0], snakemake.threads, seed=spec["settings"].get("seed", 0)):
    device = resolve_device(rt["device"])
    dense, _ = load_model(f"{snakemake.input.dense}/model")
    model, tok = load_model(pruned_dir / "model")
    masks = {i: load_block_masks(f) for i, f in enumerate(sorted((pruned_dir / "masks").glob("block*.safetensors")))}
    calib = load_calibration(snakemake.input.calib)
    total = sum(p.numel() for p in model.parameters())
    result = recover(dense, model, masks, calib, recovery, spec["settings"], device)
    with atomic_path(snakemake.output[0]) as out:
        save_model(model, tok, out / "model")
        shutil.copytree(pruned_dir / "masks", out / "masks")
        base = read_json(pruned_dir / "summary.json")
        summary = {
            **base,
            "recovery": recovery.spec,
            "settings": spec["settings"],
            "recover_seconds": result["seconds"],
            "recover_peak_memory_mb": peak_memory_mb(device),
            # retraining reports its trainable set; reconstruction the largest set held at once
            "trainable_params": result.get("trainable_params", result.get("max_trainable_params")),
            "trainable_fraction": result.get("trainable_params", result.get("max_trainable_params")) / total,
            "unavailable": result.get("unavailable", []),
            "notes": result.get("notes", []),
        }
        write_json(out / "summary.json", summary)
