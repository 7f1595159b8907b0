"""Sequential pruning: block by block on inputs propagated through the already-pruned blocks."""
import time

from pruneflow.calibration import load_calibration
from pruneflow.criteria import get_criterion
from pruneflow.experiments import parse_method_id
from pruneflow.io import atomic_path, save_model, write_json
from pruneflow.masks_io import save_block_masks
from pruneflow.models import load_model
from pruneflow.prune import prune_model
from pruneflow.runtime import job, peak_memory_mb, resolve_device, runtime_settings
from pruneflow.summaries import variant_summary

rt = runtime_settings(snakemake.config)
method = parse_method_id(snakemake.wildcards.method)
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, tok = load_model(f"{snakemake.input.model}/model")
    calib = load_calibration(snakemake.input.calib)
    with atomic_path(snakemake.output[0]) as out:
        start = time.perf_counter()
        blocks = prune_model(model, get_criterion(method.criterion), method.pattern, calib, method.stream, rt["batch_size"], device)
        for index, masks in blocks:
            save_block_masks(out / "masks" / f"block{index:03d}.safetensors", masks)
        seconds = time.perf_counter() - start
        save_model(model, tok, out / "model")
        write_json(out / "summary.json", variant_summary(method, snakemake.wildcards.calib, seconds, peak_memory_mb(device)))
