"""Zero-shot accuracy of one model variant on one task (or group, or tag) through lm-eval. The variant holds
runtime.zeroshot_blocks decoder blocks at once (the others are read from it as each batch reaches them), or, with
all, is dispatched by accelerate within runtime.max_memory (GPUs, CPU, then disk beside the result). A local task
scores its built items; an lm-eval task every item, or the first N (wildcard scope: all or limit<N>)."""
from pruneflow.core.artifacts import save_json, verify_folder
from pruneflow.core.atomic import scratch_folder
from pruneflow.core.dispatch import dispatch_stream, stream_dispatch
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.evaluate.zeroshot import evaluate_zeroshot, library_versions
from pruneflow.spec.resources import zeroshot_held_blocks

rt = runtime_settings(snakemake.config)
w = snakemake.wildcards
scope = w.get("scope")
limit = int(w.nitems) if scope is None else None if scope == "all" else int(scope.removeprefix("limit"))
with (
    job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)) as info,
    scratch_folder(snakemake.output[0], "offload") as offload,
):
    stream, device = open_stream(snakemake.input.model), resolve_device(rt["device"])
    held = zeroshot_held_blocks(rt, device.type == "cuda")
    stream.model.config.use_cache = False  # lm-eval scores whole requests: a key/value cache would only hold every block's
    model = dispatch_stream(stream, device, rt["max_memory"], offload) if held is None else stream_dispatch(stream, device, held)
    task_dir = snakemake.input.get("task")
    if task_dir:  # a local task's items, as built
        verify_folder(task_dir)
    result = evaluate_zeroshot(model, stream.tokenizer, [w.task], task_dir, limit=limit, batch_size=rt["eval_batch_size"])
    print(result)
save_json(
    snakemake.output[0], {"task": w.task, **result[w.task], "limit": limit, "versions": library_versions(), "seconds": info["seconds"]}
)
