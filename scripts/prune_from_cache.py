"""SparseGPT on the dense stream: cached Gram matrices in, pruned and updated weights out (no forward pass)."""
from pathlib import Path

from pruneflow.artifacts import artifact_folder
from pruneflow.criteria import get_criterion
from pruneflow.dense_stream import prune_from_cache
from pruneflow.experiments import make_method
from pruneflow.masks_io import save_masks
from pruneflow.runtime import job, resolve_device, runtime_settings
from pruneflow.summaries import variant_summary
from pruneflow.variants import load_variant, write_variant

rt = runtime_settings(snakemake.config)
method = make_method("sparsegpt", snakemake.wildcards.pattern, "dense")
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, tok = load_variant(snakemake.input.model)
    with artifact_folder(snakemake.output[0]) as out:
        for index, masks in prune_from_cache(model, get_criterion("sparsegpt"), method.pattern, snakemake.input.cache, device):
            save_masks(out / "masks", index, masks)
        write_variant(out, model, tok, Path(snakemake.input.model), Path(snakemake.output[0]),
                      variant_summary(method, snakemake.wildcards.calib), requested=method.pattern.sparsity)
