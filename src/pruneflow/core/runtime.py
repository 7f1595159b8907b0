"""How a job runs: threads, device, log redirection, cost measurement."""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
import time
import traceback
from pathlib import Path

import torch

from pruneflow.core import provenance
from pruneflow.core.gpus import claim_gpus
from pruneflow.spec.config import with_defaults


def resolve_device(name: str = "cpu") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available; allowed here: cpu, auto")
    return torch.device(name)


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak resident memory of this process (CPU), or peak allocated accelerator memory."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@contextlib.contextmanager
def job(log_path: str | None = None, threads: int = 1, seed: int = 0, gpus: int = 0):
    """Run a job body with its output sent to ``log_path``, a fixed thread count and seed, on ``gpus`` GPUs
    of its own (claimed before CUDA starts: pruneflow.core.gpus; none under SLURM, which has chosen them).

    Yields a dict; ``seconds`` is filled in on exit. An exception in the body writes its full traceback
    to the log (on a cluster the terminal that started the job is gone) and is re-raised, so the job
    still fails. Files the body reads through PruneFlow's readers are noted as read
    (:mod:`pruneflow.core.provenance`); one changed before the body ends fails the job, naming it.
    Meant once per process, around a job's work: on exit, the objects alive are frozen out
    of garbage collection, as the process ends soon after.
    """
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    info: dict = {}
    log = open(log_path, "w") if log_path else None
    old = sys.stdout, sys.stderr
    if log:
        sys.stdout = sys.stderr = log
    start = time.perf_counter()
    print(f"pruneflow library: {Path(__file__).parents[1]}")  # which checkout's code made this result
    provenance.start_job()
    try:
        if claimed := claim_gpus(gpus):
            print(f"GPUs claimed: {','.join(claimed)}")
        yield info
        provenance.check_reads()
    except BaseException:
        if log:
            traceback.print_exc(file=log)
            log.flush()
        raise
    finally:
        provenance.end_job()
        info["seconds"] = time.perf_counter() - start
        sys.stdout, sys.stderr = old
        if log:
            # the exact peak (Snakemake's benchmark file samples memory every 30 s after a job's first 30 s)
            print(f"{PEAK_RSS_LINE} {peak_memory_mb():.1f}", file=log)
            log.close()
        # The interpreter's last garbage collection at exit walks every object torch, transformers and
        # lm-eval made (~1 s a job; bench/job_overhead.py); frozen, they are left for the OS to free.
        gc.freeze()


PEAK_RSS_LINE = "peak RSS (MB):"  # the last line of a job's log


def _malloc_trim():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _malloc_trim()


def return_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Tensors under glibc's mmap threshold (which rises to 32 MiB as large tensors are freed) live on the heap,
    and glibc keeps their pages after they are freed: a streamed job grew by a block's worth of temporaries
    per block. Called once per released block (bench/scale.py: sequential Wanda's peak 1.45 -> 1.24 GiB);
    lowering the threshold instead returned memory on every free and made pruning 1.35-1.5x slower."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def runtime_settings(config: dict) -> dict:
    """The config's ``runtime`` section, defaults from the schema; read by jobs directly, never a tracked
    param, because it changes how a job runs, not what it computes."""
    return with_defaults(config)["runtime"]
