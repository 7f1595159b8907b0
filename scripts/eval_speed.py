"""CPU forward throughput (tokens/s) and parameter count of one model variant."""
from pruneflow.io import write_json
from pruneflow.models import load_model
from pruneflow.runtime import job
from pruneflow.speed import tokens_per_second
from pruneflow.structured import count_parameters

with job(snakemake.log[0], snakemake.threads):
    model, _ = load_model(f"{snakemake.input.model}/model")
    tps = tokens_per_second(model, seqlen=int(snakemake.wildcards.seqlen), batch_size=1, repeats=5)
write_json(snakemake.output[0], {"tokens_per_second": tps, "parameters": count_parameters(model), "threads": snakemake.threads})
