"""One dense pass over the calibration samples: per-block input statistics for every criterion."""
import time

from pruneflow.calibration import load_calibration
from pruneflow.dense_stream import build_activation_cache
from pruneflow.io import atomic_path, write_json
from pruneflow.models import load_model
from pruneflow.runtime import job, peak_memory_mb, resolve_device, runtime_settings
from pruneflow.summaries import step_summary

rt = runtime_settings(snakemake.config)
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, _ = load_model(f"{snakemake.input.model}/model")
    calib = load_calibration(snakemake.input.calib)
    with atomic_path(snakemake.output[0]) as out:
        start = time.perf_counter()
        sizes = build_activation_cache(model, calib, out, rt["batch_size"], device, gram=snakemake.params.gram)
        write_json(out / "summary.json", step_summary(time.perf_counter() - start, peak_memory_mb(device), **sizes))
