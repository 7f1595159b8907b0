"""Materialise the configured model as the dense variant (results/<model>/dense: a Hugging Face folder)."""
import json

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.models import load_source, resolve_dtype, torch_dtype
from pruneflow.core.runtime import job
from pruneflow.core.writer import write_full_variant

with job(snakemake.log[0], snakemake.threads):
    spec = json.loads(snakemake.params.spec)  # its dtype resolved when the DAG was built (rules/common.smk)
    dtype = resolve_dtype(spec)
    model, tok = load_source(spec)
    model = model.to(torch_dtype(dtype))
    with artifact_folder(snakemake.output[0]) as out:
        write_full_variant(out, model, tok, {"variant": "dense", "source": spec, "dtype": dtype})
