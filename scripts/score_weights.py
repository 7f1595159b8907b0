"""Scores of every prunable weight for one score-based criterion (one file per block)."""
import time

from pruneflow.criteria import get_criterion
from pruneflow.dense_stream import block_file, model_scores
from pruneflow.io import atomic_path, save_tensors, write_json
from pruneflow.models import load_model
from pruneflow.runtime import job, peak_memory_mb
from pruneflow.summaries import step_summary

with job(snakemake.log[0], snakemake.threads):
    model, _ = load_model(f"{snakemake.input.model}/model")
    criterion = get_criterion(snakemake.wildcards.criterion)
    with atomic_path(snakemake.output[0]) as out:
        start = time.perf_counter()
        for index, scores in model_scores(model, criterion, snakemake.input.cache or None):
            save_tensors(block_file(out, index), scores)
        write_json(out / "summary.json", step_summary(time.perf_counter() - start, peak_memory_mb()))
