"""CPU forward throughput (tokens/s) and parameter count of one model variant."""
from pruneflow.core.atomic import write_json
from pruneflow.core.runtime import job
from pruneflow.evaluate.speed import tokens_per_second
from pruneflow.structured.prune import count_parameters
from pruneflow.core.variants import load_variant

with job(snakemake.log[0], snakemake.threads):
    model, _ = load_variant(snakemake.input.model)
    tps = tokens_per_second(model, seqlen=int(snakemake.wildcards.seqlen), batch_size=1, repeats=5)
write_json(snakemake.output[0], {"tokens_per_second": tps, "parameters": count_parameters(model), "threads": snakemake.threads})
