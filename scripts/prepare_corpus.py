"""Split a corpus into calibration and held-out evaluation documents (JSONL, one {"text": ...} a line)."""
import json

from pruneflow.data.corpora import corpus_splits
from pruneflow.core.atomic import atomic_path
from pruneflow.core.runtime import job

with job(snakemake.log[0], snakemake.threads):
    spec = json.loads(snakemake.params.spec)
    splits = corpus_splits(spec)
    for part in ("calib", "eval"):
        with atomic_path(snakemake.output[part]) as tmp:
            tmp.write_text("".join(json.dumps({"text": d}) + "\n" for d in splits[part]))
        print(f"{part}: {len(splits[part])} documents")
