"""A solver (SparseGPT) on the dense stream: cached Gram matrices in, pruned and updated weights out (no forward
pass); per-block sparsities from an allocation artifact for methods with one (OWL). Each block is written as it is done."""
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.fallbacks import recording
from pruneflow.core.mask_files import save_masks
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.core.summaries import variant_summary
from pruneflow.core.writer import VariantWriter
from pruneflow.prune.allocation import method_block_sparsities
from pruneflow.prune.criteria import method_criterion
from pruneflow.prune.dense_stream import prune_from_cache
from pruneflow.spec.naming import known_parts, parse_method_id

rt = runtime_settings(snakemake.config)
method = parse_method_id(snakemake.wildcards.method, known_parts(snakemake.config))  # settings hashes from the studies
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)):
    device = resolve_device(rt["device"])
    stream = open_stream(snakemake.input.model, tokenizer=False)
    per_block = method_block_sparsities(method, snakemake.input.get("allocation"), stream)
    with artifact_folder(snakemake.output[0]) as out, recording() as fallbacks:
        stream.sink = writer = VariantWriter(out, stream, Path(snakemake.output[0]))
        for index, masks in prune_from_cache(stream, method_criterion(method), method.pattern, snakemake.input.cache, device, per_block):
            save_masks(out / "masks", index, masks)
        writer.finish(stream.model, variant_summary(method, snakemake.wildcards.calib, fallbacks), requested=method.pattern.sparsity,
                      block_requested=per_block)
