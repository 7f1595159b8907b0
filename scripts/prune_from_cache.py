"""SparseGPT on the dense stream: cached Gram matrices in, pruned and updated weights out (no forward pass);
per-block sparsities from an allocation artifact for OWL methods."""
from pathlib import Path

from pruneflow.prune.allocation import method_block_sparsities
from pruneflow.core.artifacts import artifact_folder
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.dense_stream import prune_from_cache
from pruneflow.spec.naming import parse_method_id
from pruneflow.core.mask_files import save_masks
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.summaries import variant_summary
from pruneflow.core.variants import load_variant, write_variant

rt = runtime_settings(snakemake.config)
method = parse_method_id(f"sparsegpt-{snakemake.wildcards.pattern}{snakemake.wildcards.alloc}-dense")
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, tok = load_variant(snakemake.input.model)
    per_block = method_block_sparsities(method, snakemake.input.get("allocation"), model)
    with artifact_folder(snakemake.output[0]) as out:
        for index, masks in prune_from_cache(model, get_criterion("sparsegpt"), method.pattern, snakemake.input.cache, device, per_block):
            save_masks(out / "masks", index, masks)
        write_variant(out, model, tok, Path(snakemake.input.model), Path(snakemake.output[0]),
                      variant_summary(method, snakemake.wildcards.calib), requested=method.pattern.sparsity,
                      block_requested=per_block)
