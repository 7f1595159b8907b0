"""Materialise the configured model as a Hugging Face folder (results/<model>/dense/model)."""
import json

from pruneflow.io import atomic_path, write_json
from pruneflow.models import materialize
from pruneflow.runtime import job

with job(snakemake.log[0], snakemake.threads) as info:
    spec = json.loads(snakemake.params.spec)
    with atomic_path(snakemake.output[0]) as out:
        materialize(spec, out / "model")
        write_json(out / "summary.json", {"variant": "dense", "source": spec})
