"""Forward throughput (tokens/s) and parameter count of one model variant, dispatched as zero-shot is
(runtime.max_memory); the result says where the blocks were, since blocks read from disk time the disk too."""
from pruneflow.core.artifacts import save_json
from pruneflow.core.atomic import scratch_folder
from pruneflow.core.dispatch import dispatch_stream, placement
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.evaluate.speed import tokens_per_second
from pruneflow.structured.prune import count_parameters

rt = runtime_settings(snakemake.config)
with job(snakemake.log[0], snakemake.threads), scratch_folder(snakemake.output[0], "offload") as offload:
    stream = open_stream(snakemake.input.model, tokenizer=False)
    model = dispatch_stream(stream, resolve_device(rt["device"]), rt["max_memory"], offload)
    tps = tokens_per_second(model, seqlen=int(snakemake.wildcards.seqlen), batch_size=1, repeats=5)
    where = placement(model)
    params = count_parameters(model)  # offloaded blocks are meta tensors of the right shapes
note = "blocks offloaded to disk: the throughput includes reading them" if "disk" in where else ""
save_json(snakemake.output[0], {"tokens_per_second": tps, "parameters": params, "threads": snakemake.threads,
                                 "placement": where, "note": note})
