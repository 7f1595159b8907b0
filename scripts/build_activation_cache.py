"""One dense pass over the calibration samples: per-block input statistics for every criterion."""
from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.atomic import write_json
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.data.calibration import load_calibration
from pruneflow.prune.dense_stream import build_activation_cache
from pruneflow.spec.config import cache_channel_sums, cache_grams

rt = runtime_settings(snakemake.config)
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)):
    device = resolve_device(rt["device"])
    stream = open_stream(snakemake.input.model, tokenizer=False)
    calib = load_calibration(snakemake.input.calib)
    with artifact_folder(snakemake.output[0]) as out:
        sizes = build_activation_cache(stream, calib, out, rt["batch_size"], device, gram=cache_grams(snakemake.config),
                                       channel_sums=cache_channel_sums(snakemake.config))
        write_json(out / "summary.json", sizes)
