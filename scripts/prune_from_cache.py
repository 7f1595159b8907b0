"""SparseGPT on the dense stream: cached Gram matrices in, pruned and updated weights out (no forward pass)."""
import time
from pathlib import Path

from pruneflow.criteria import get_criterion
from pruneflow.dense_stream import prune_from_cache
from pruneflow.experiments import make_method
from pruneflow.io import atomic_path, save_model, write_json
from pruneflow.masks_io import save_block_masks
from pruneflow.models import load_model
from pruneflow.runtime import job, peak_memory_mb, resolve_device, runtime_settings
from pruneflow.summaries import variant_summary

rt = runtime_settings(snakemake.config)
method = make_method("sparsegpt", snakemake.wildcards.pattern, "dense")
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, tok = load_model(f"{snakemake.input.model}/model")
    with atomic_path(snakemake.output[0]) as out:
        start = time.perf_counter()
        for index, masks in prune_from_cache(model, get_criterion("sparsegpt"), method.pattern, snakemake.input.cache, device):
            save_block_masks(out / "masks" / f"block{index:03d}.safetensors", masks)
        seconds = time.perf_counter() - start
        save_model(model, tok, out / "model")
        summary = variant_summary(method, snakemake.wildcards.calib, seconds, peak_memory_mb(device), [Path(snakemake.input.cache)])
        write_json(out / "summary.json", summary)
