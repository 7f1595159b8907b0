"""Split a corpus into calibration and held-out evaluation documents (JSONL, one {"text": ...} a line)."""
import json

from pruneflow.core.runtime import job
from pruneflow.data.corpora import corpus_splits
from pruneflow.data.jsonl import save_texts

with job(snakemake.log[0], snakemake.threads):
    spec = json.loads(snakemake.params.spec)
    splits = corpus_splits(spec)
    for part in ("calib", "eval"):
        save_texts(snakemake.output[part], splits[part])
        print(f"{part}: {len(splits[part])} documents")
