"""Reconstruct or retrain a pruned variant (masks kept exactly); store it as changes to the pruned one,
block by block as the recovery finishes each. An interleaved reconstruction prunes the dense model block
by block as it goes: it is stored as changes to the dense model, with its own masks."""
import json
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder, load_json
from pruneflow.core.fallbacks import merged, recording
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.core.summaries import variant_summary
from pruneflow.core.writer import VariantWriter
from pruneflow.data.calibration import load_calibration
from pruneflow.recover.run import recover
from pruneflow.spec.naming import Recovery, known_parts, parse_method_id
from pruneflow.structured.prune import count_parameters

rt = runtime_settings(snakemake.config)
spec = json.loads(snakemake.params.spec)
recovery = Recovery(**spec["recovery"])
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0), seed=spec["settings"].get("seed", 0)):
    device = resolve_device(rt["device"])
    dense = None if recovery.whole_model else open_stream(snakemake.input.dense, tokenizer=False)
    calib = load_calibration(snakemake.input.calib)
    if recovery.interleaved:
        method = parse_method_id(snakemake.wildcards.method, known_parts(snakemake.config))
        parent, masks = Path(snakemake.input.dense), {}  # filled block by block as the recovery prunes
        base = variant_summary(method, snakemake.wildcards.pcalib)
    else:
        method, parent = None, Path(snakemake.input.pruned)
        base, masks = load_json(parent / "summary.json"), None
    work = open_stream(parent, tokenizer=False, skeleton_of=dense)
    masks = work.keep_masks if masks is None else masks
    total = count_parameters(work.model)
    with artifact_folder(snakemake.output[0]) as out, recording() as fallbacks:
        work.sink = writer = VariantWriter(out, work, Path(snakemake.output[0]), masks=masks if recovery.interleaved else None)
        result = recover(dense, work, masks, calib, recovery, spec["settings"], device, method, rt["gradient_checkpointing"])
        # retraining reports its trainable set; reconstruction the largest set held at once
        trainable = result.get("trainable_params", result.get("max_trainable_params"))
        summary = {
            **base,
            "recovery": recovery.spec,
            "settings": spec["settings"],
            "trainable_params": trainable,
            "trainable_fraction": trainable / total,
            "unavailable": result.get("unavailable", []),
            "notes": result.get("notes", []),
            "fallbacks": merged(base.get("fallbacks"), fallbacks),  # the pruning's (its parent's) and this job's
        }
        writer.finish(work.model, summary, requested=method.pattern.sparsity if method else None)
