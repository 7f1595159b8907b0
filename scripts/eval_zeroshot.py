"""Zero-shot accuracy of one model variant on one task through lm-eval, offline."""
from pruneflow.core.atomic import write_json
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.variants import load_variant
from pruneflow.evaluate.zeroshot import evaluate_zeroshot

rt = runtime_settings(snakemake.config)
w = snakemake.wildcards
with job(snakemake.log[0], snakemake.threads) as info:
    model, tok = load_variant(snakemake.input.model)
    task_dir = snakemake.input.get("task")
    result = evaluate_zeroshot(model, tok, [w.task], task_dir, limit=int(w.nitems), batch_size=rt["eval_batch_size"],
                               device=resolve_device(rt["device"]))
    print(result)
write_json(snakemake.output[0], {"task": w.task, **result[w.task], "seconds": info["seconds"]})
