"""CPU forward throughput (tokens/s) and parameter count of one model variant."""
from pruneflow.io import write_json
from pruneflow.runtime import job
from pruneflow.speed import tokens_per_second
from pruneflow.structured import count_parameters
from pruneflow.variants import load_variant

with job(snakemake.log[0], snakemake.threads):
    model, _ = load_variant(snakemake.input.model)
    tps = tokens_per_second(model, seqlen=int(snakemake.wildcards.seqlen), batch_size=1, repeats=5)
write_json(snakemake.output[0], {"tokens_per_second": tps, "parameters": count_parameters(model), "threads": snakemake.threads})
