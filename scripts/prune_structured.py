"""Remove heads and/or FFN neurons, repair the output projections; store the smaller model as the
dense model's blocks sliced, plus the repaired projections (variants.write_structured_variant)."""
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder
from pruneflow.data.calibration import load_calibration
from pruneflow.spec.naming import parse_structured_id
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.structured.prune import prune_structured
from pruneflow.core.variants import load_variant, write_structured_variant

rt = runtime_settings(snakemake.config)
m = parse_structured_id(snakemake.wildcards.method)
with job(snakemake.log[0], snakemake.threads):
    device = resolve_device(rt["device"])
    model, tok = load_variant(snakemake.input.model)
    calib = load_calibration(snakemake.input.calib)
    selections = {}
    summary = prune_structured(model, calib, m.target, m.ratio, m.criterion, m.reconstruction, m.damping, rt["batch_size"],
                               device, selections)
    summary["calibration"] = snakemake.wildcards.calib
    with artifact_folder(snakemake.output[0]) as out:
        write_structured_variant(out, model, tok, Path(snakemake.input.model), Path(snakemake.output[0]), summary, selections)
