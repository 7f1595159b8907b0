"""Zero-shot accuracy of one model variant on one task (or group, or tag) through lm-eval. The variant is dispatched
by accelerate within runtime.max_memory (GPUs, CPU, then disk beside the result), block by block. A local task scores
its built items; an lm-eval task every item, or the first N (wildcard scope: all or limit<N>)."""
from pruneflow.core.artifacts import save_json, verify_folder
from pruneflow.core.atomic import scratch_folder
from pruneflow.core.dispatch import dispatch_stream
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.evaluate.zeroshot import evaluate_zeroshot, library_versions

rt = runtime_settings(snakemake.config)
w = snakemake.wildcards
scope = w.get("scope")
limit = int(w.nitems) if scope is None else None if scope == "all" else int(scope.removeprefix("limit"))
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)) as info, scratch_folder(snakemake.output[0], "offload") as offload:
    stream = open_stream(snakemake.input.model)
    model = dispatch_stream(stream, resolve_device(rt["device"]), rt["max_memory"], offload)
    task_dir = snakemake.input.get("task")
    if task_dir:  # a local task's items, as built
        verify_folder(task_dir)
    result = evaluate_zeroshot(model, stream.tokenizer, [w.task], task_dir, limit=limit, batch_size=rt["eval_batch_size"])
    print(result)
save_json(snakemake.output[0], {"task": w.task, **result[w.task], "limit": limit, "versions": library_versions(), "seconds": info["seconds"]})
