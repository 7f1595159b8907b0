"""Sequential pruning: block by block on inputs propagated through the already-pruned blocks
(per-block sparsities from an allocation artifact for OWL methods)."""
from pathlib import Path

from pruneflow.prune.allocation import method_block_sparsities
from pruneflow.core.artifacts import artifact_folder
from pruneflow.data.calibration import load_calibration
from pruneflow.prune.criteria import get_criterion
from pruneflow.spec.naming import parse_method_id
from pruneflow.core.mask_files import save_masks
from pruneflow.prune.sequential import prune_model
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.summaries import variant_summary
from pruneflow.core.variants import load_variant, write_variant

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
