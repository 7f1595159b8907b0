"""Remove heads and/or FFN neurons, repair the output projections, save the smaller model."""
import time

from pruneflow.calibration import load_calibration
from pruneflow.experiments import parse_structured_id
from pruneflow.io import atomic_path, save_model, write_json
from pruneflow.models import load_model
from pruneflow.runtime import job, peak_memory_mb, resolve_device, runtime_settings
from pruneflow.structured import prune_structured

rt = runtime_settings(snakemake.config)
m = parse_structured_id(snakemake.wildcards.method)
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, tok = load_model(f"{snakemake.input.model}/model")
    calib = load_calibration(snakemake.input.calib)
    with atomic_path(snakemake.output[0]) as out:
        start = time.perf_counter()
        summary = prune_structured(model, calib, m.target, m.ratio, m.criterion, m.reconstruction, m.damping, rt["batch_size"], device)
        summary.update(prune_seconds=time.perf_counter() - start, peak_memory_mb=peak_memory_mb(device),
                       calibration=snakemake.wildcards.calib)
        save_model(model, tok, out / "model")
        write_json(out / "summary.json", summary)
