"""A variant of a registered criterion (magnitude; Wanda, RIA on the dense stream): scores from the dense weights
(and the activation cache), keep-masks for the pattern (per block for OWL methods, from their
allocation artifact), stored as the dense model + masks. One block is read at a time."""
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.mask_files import save_masks
from pruneflow.core.runtime import job
from pruneflow.core.stream import open_stream
from pruneflow.core.summaries import variant_summary
from pruneflow.core.writer import VariantWriter
from pruneflow.prune.allocation import method_block_sparsities
from pruneflow.prune.criteria import method_criterion
from pruneflow.prune.dense_stream import masks_by_score
from pruneflow.spec.naming import known_parts, parse_method_id

method = parse_method_id(snakemake.wildcards.method, known_parts(snakemake.config))  # settings hashes from the studies
criterion = method_criterion(method)
with job(snakemake.log[0], snakemake.threads):
    stream = open_stream(snakemake.input.model, tokenizer=False)
    per_block = method_block_sparsities(method, snakemake.input.get("allocation"), stream)
    with artifact_folder(snakemake.output[0]) as out:
        stream.sink = writer = VariantWriter(out, stream, Path(snakemake.output[0]), kind="masks")
        for index, masks in masks_by_score(stream, criterion, method.pattern, snakemake.input.get("cache") or None, per_block):
            save_masks(out / "masks", index, masks)
        writer.finish(stream.model, variant_summary(method, snakemake.wildcards.calib), requested=method.pattern.sparsity,
                      block_requested=per_block)
