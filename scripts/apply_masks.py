"""A pruned model from the dense model and stored masks."""
import shutil
import time
from pathlib import Path

from pruneflow.dense_stream import apply_masks
from pruneflow.experiments import parse_method_id
from pruneflow.io import atomic_path, save_model, write_json
from pruneflow.masks_io import load_block_masks
from pruneflow.models import load_model
from pruneflow.runtime import job, peak_memory_mb
from pruneflow.summaries import variant_summary

w = snakemake.wildcards
method = parse_method_id(f"{w.criterion}-{w.pattern}{w.stream}")
masks_dir = Path(snakemake.input.masks)
with job(snakemake.log[0], snakemake.threads):
    model, tok = load_model(f"{snakemake.input.model}/model")
    files = sorted(masks_dir.glob("block*.safetensors"))
    with atomic_path(snakemake.output[0]) as out:
        start = time.perf_counter()
        apply_masks(model, {i: load_block_masks(f) for i, f in enumerate(files)})
        save_model(model, tok, out / "model")
        shutil.copytree(masks_dir, out / "masks", ignore=shutil.ignore_patterns("summary.json"))
        # Cost from scratch: this step plus the masks, scores and activation cache it used.
        upstream = [masks_dir, masks_dir.parent.parent.parent / "scores" / w.calib / w.criterion]
        if w.calib != "none":
            upstream.append(masks_dir.parent.parent.parent / "acts" / w.calib)
        summary = variant_summary(method, w.calib, time.perf_counter() - start, peak_memory_mb(), [u for u in upstream if u.exists()])
        write_json(out / "summary.json", summary)
