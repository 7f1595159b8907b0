"""Write a variant as a self-contained Hugging Face folder (plain safetensors) that loads without PruneFlow."""
from pruneflow.runtime import job
from pruneflow.variants import export_variant

with job(snakemake.log[0], snakemake.threads):
    export_variant(snakemake.input.model, snakemake.output[0])
