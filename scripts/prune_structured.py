"""Remove heads and/or FFN neurons, repair the output projections; store the smaller model as the
dense model's blocks sliced, plus the repaired projections, each block written as it is done."""
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.core.writer import VariantWriter
from pruneflow.data.calibration import load_calibration
from pruneflow.spec.naming import parse_structured_id
from pruneflow.structured.prune import prune_structured

rt = runtime_settings(snakemake.config)
m = parse_structured_id(snakemake.wildcards.method)
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)):
    device = resolve_device(rt["device"])
    stream = open_stream(snakemake.input.model, tokenizer=False)
    calib = load_calibration(snakemake.input.calib)
    selections = {}
    with artifact_folder(snakemake.output[0]) as out:
        stream.sink = writer = VariantWriter(out, stream, Path(snakemake.output[0]), kind="structured", selections=selections)
        summary = prune_structured(stream, calib, m.target, m.ratio, m.criterion, m.reconstruction, m.damping, rt["batch_size"],
                                   device, selections)
        summary["calibration"] = snakemake.wildcards.calib
        writer.finish(stream.model, summary)
