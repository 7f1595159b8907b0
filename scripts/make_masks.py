"""Keep-masks for one pattern from stored scores (one bit-packed file per block)."""
import time
from pathlib import Path

from safetensors.torch import load_file

from pruneflow.criteria import get_criterion
from pruneflow.dense_stream import masks_from_scores
from pruneflow.io import atomic_path, write_json
from pruneflow.masks import parse_pattern
from pruneflow.masks_io import save_block_masks
from pruneflow.runtime import job, peak_memory_mb
from pruneflow.summaries import step_summary

with job(snakemake.log[0], snakemake.threads):
    criterion = get_criterion(snakemake.wildcards.criterion)
    pattern = parse_pattern(snakemake.wildcards.pattern)
    with atomic_path(snakemake.output[0]) as out:
        start = time.perf_counter()
        for path in sorted(Path(snakemake.input[0]).glob("block*.safetensors")):
            save_block_masks(out / path.name, masks_from_scores(load_file(path), pattern, criterion))
        write_json(out / "summary.json", step_summary(time.perf_counter() - start, peak_memory_mb()))
