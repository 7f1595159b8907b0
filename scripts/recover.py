"""Reconstruct or retrain a pruned variant (masks kept exactly); store it as changes to the pruned one.
An interleaved reconstruction prunes the dense model block by block as it goes: it is stored as changes
to the dense model, with its own masks."""
import copy
import json
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder
from pruneflow.data.calibration import load_calibration
from pruneflow.spec.naming import Recovery, parse_method_id
from pruneflow.core.atomic import read_json
from pruneflow.core.mask_files import save_masks
from pruneflow.recover.run import recover
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.summaries import variant_summary
from pruneflow.core.variants import load_variant, load_variant_with_masks, write_variant

rt = runtime_settings(snakemake.config)
spec = json.loads(snakemake.params.spec)
recovery = Recovery(**spec["recovery"])
with job(snakemake.log[0], snakemake.threads, seed=spec["settings"].get("seed", 0)):
    device = resolve_device(rt["device"])
    dense, tok = load_variant(snakemake.input.dense)
    calib = load_calibration(snakemake.input.calib)
    if recovery.interleaved:
        method = parse_method_id(snakemake.wildcards.method)
        parent = Path(snakemake.input.dense)
        model, masks, base = copy.deepcopy(dense), None, variant_summary(method, snakemake.wildcards.pcalib)
    else:
        method, parent = None, Path(snakemake.input.pruned)
        model, tok, masks = load_variant_with_masks(parent)
        base = read_json(parent / "summary.json")
    total = sum(p.numel() for p in model.parameters())
    result = recover(dense, model, masks, calib, recovery, spec["settings"], device, method)
    del dense  # writing rebuilds the parent to find what changed
    # retraining reports its trainable set; reconstruction the largest set held at once
    trainable = result.get("trainable_params", result.get("max_trainable_params"))
    summary = {
        **base,
        "recovery": recovery.spec,
        "settings": spec["settings"],
        "trainable_params": trainable,
        "trainable_fraction": trainable / total,
        "unavailable": result.get("unavailable", []),
        "notes": result.get("notes", []),
    }
    with artifact_folder(snakemake.output[0]) as out:
        for index, block_masks in sorted(result.get("masks", {}).items()):  # interleaved: masks of its own
            save_masks(out / "masks", index, block_masks)
        requested = method.pattern.sparsity if method else None
        write_variant(out, model, tok, parent, Path(snakemake.output[0]), summary, requested=requested)
