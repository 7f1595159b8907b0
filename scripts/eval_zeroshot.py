"""Zero-shot accuracy of one model variant on one task through lm-eval, offline. The variant is dispatched
by accelerate within runtime.max_memory (GPUs, CPU, then disk beside the result), block by block."""
from pruneflow.core.atomic import scratch_folder, write_json
from pruneflow.core.dispatch import dispatch_stream
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.evaluate.zeroshot import evaluate_zeroshot

rt = runtime_settings(snakemake.config)
w = snakemake.wildcards
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)) as info, scratch_folder(snakemake.output[0], "offload") as offload:
    stream = open_stream(snakemake.input.model)
    model = dispatch_stream(stream, resolve_device(rt["device"]), rt["max_memory"], offload)
    task_dir = snakemake.input.get("task")
    result = evaluate_zeroshot(model, stream.tokenizer, [w.task], task_dir, limit=int(w.nitems), batch_size=rt["eval_batch_size"])
    print(result)
write_json(snakemake.output[0], {"task": w.task, **result[w.task], "seconds": info["seconds"]})
