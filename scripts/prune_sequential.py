"""Sequential pruning: block by block on inputs propagated through the already-pruned blocks
(per-block sparsities from an allocation artifact for OWL methods)."""
from pathlib import Path

from pruneflow.allocation import method_block_sparsities
from pruneflow.artifacts import artifact_folder
from pruneflow.calibration import load_calibration
from pruneflow.criteria import get_criterion
from pruneflow.experiments import parse_method_id
from pruneflow.masks_io import save_masks
from pruneflow.prune import prune_model
from pruneflow.runtime import job, resolve_device, runtime_settings
from pruneflow.summaries import variant_summary
from pruneflow.variants import load_variant, write_variant

rt = runtime_settings(snakemake.config)
method = parse_method_id(snakemake.wildcards.method)
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, tok = load_variant(snakemake.input.model)
    calib = load_calibration(snakemake.input.calib)
    per_block = method_block_sparsities(method, snakemake.input.get("allocation"), model)
    with artifact_folder(snakemake.output[0]) as out:
        blocks = prune_model(model, get_criterion(method.criterion), method.pattern, calib, method.stream, rt["batch_size"],
                             device, block_sparsities=per_block)
        for index, masks in blocks:  # each block's masks land as soon as it is pruned
            save_masks(out / "masks", index, masks)
        write_variant(out, model, tok, Path(snakemake.input.model), Path(snakemake.output[0]),
                      variant_summary(method, snakemake.wildcards.calib), requested=method.pattern.sparsity,
                      block_requested=per_block)
