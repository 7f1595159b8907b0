"""Write a variant as a self-contained Hugging Face folder (plain safetensors) that loads without PruneFlow."""
from pruneflow.core.runtime import job
from pruneflow.core.writer import export_variant

with job(snakemake.log[0], snakemake.threads):
    export_variant(snakemake.input.model, snakemake.output[0])
