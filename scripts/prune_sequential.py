"""Sequential pruning: block by block on inputs propagated through the already-pruned blocks
(per-block sparsities from an allocation artifact for OWL methods); each block is written as it is done."""
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.fallbacks import recording
from pruneflow.core.mask_files import save_masks
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.core.summaries import variant_summary
from pruneflow.core.writer import VariantWriter
from pruneflow.data.calibration import load_calibration
from pruneflow.prune.allocation import method_block_sparsities
from pruneflow.prune.criteria import method_criterion
from pruneflow.prune.sequential import prune_model
from pruneflow.spec.naming import known_parts, parse_method_id

rt = runtime_settings(snakemake.config)
method = parse_method_id(snakemake.wildcards.method, known_parts(snakemake.config))  # settings hashes from the studies
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)):
    device = resolve_device(rt["device"])
    stream = open_stream(snakemake.input.model, tokenizer=False)
    calib = load_calibration(snakemake.input.calib)
    per_block = method_block_sparsities(method, snakemake.input.get("allocation"), stream)
    with artifact_folder(snakemake.output[0]) as out, recording() as fallbacks:
        stream.sink = writer = VariantWriter(out, stream, Path(snakemake.output[0]))
        blocks = prune_model(stream, method_criterion(method), method.pattern, calib, method.stream, rt["batch_size"],
                             device, block_sparsities=per_block)
        for index, masks in blocks:  # the block's masks land before the writer stores the block
            save_masks(out / "masks", index, masks)
        writer.finish(stream.model, variant_summary(method, snakemake.wildcards.calib, fallbacks), requested=method.pattern.sparsity,
                      block_requested=per_block)
