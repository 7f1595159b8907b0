"""Every GPU used: a local job claims GPUs of its own, so ``--resources gpu=N`` runs N jobs on N devices.

Snakemake's ``gpu`` resource only counts: with ``--resources gpu=4`` four GPU jobs run at once, and without
more each would take GPU 0. A job therefore claims the GPUs it asked for (its rule's ``gpu`` resource) before
torch touches CUDA: an exclusive ``flock`` on one lock file per GPU, held until the process ends (the OS
releases it even after a crash), then ``CUDA_VISIBLE_DEVICES`` set to the claimed ones. Under SLURM the
scheduler has already given the job its GPUs and set ``CUDA_VISIBLE_DEVICES``: nothing is claimed.

Nothing here imports torch: torch reads ``CUDA_VISIBLE_DEVICES`` once, when CUDA starts, and the workflow
checks ``--resources gpu=N`` against :func:`gpu_ids` while it builds the DAG.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from pathlib import Path

LOCKS = Path(tempfile.gettempdir()) / "pruneflow-gpu-locks"
_held: list = []  # open lock files: closing one (or the process ending) frees its GPU


def gpu_ids() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU the driver lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir():
        return [str(i) for i in range(len(list(gpus.iterdir())))]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def check_gpu_resource(requested: int, available: list[str]) -> None:
    """A local ``--resources gpu=N`` must not exceed the GPUs there are (else N jobs share fewer devices)."""
    if requested > len(available):
        raise ValueError(f"--resources gpu={requested} but this machine has {len(available)} GPU(s) "
                         f"({', '.join(available) or 'none'}); allowed: gpu=1..{max(1, len(available))}")


def claim_gpus(count: int, candidates: list[str] | None = None, locks: Path = LOCKS, poll: float = 1.0,
               timeout: float | None = None) -> list[str] | None:
    """Claim ``count`` GPUs no other job on this machine holds and make them this process's only visible ones;
    returns their ids, or None when a scheduler has already chosen (SLURM) or ``count`` is 0. Waits (printing
    once) while every GPU is held; ``timeout`` seconds of waiting raise TimeoutError."""
    if count <= 0 or ("SLURM_JOB_ID" in os.environ and "CUDA_VISIBLE_DEVICES" in os.environ):
        return None
    candidates = gpu_ids() if candidates is None else candidates
    if count > len(candidates):
        raise ValueError(f"a job asked for {count} GPU(s) but {len(candidates)} are visible ({', '.join(candidates) or 'none'})")
    locks.mkdir(parents=True, exist_ok=True)
    start, told = time.monotonic(), False
    while True:
        claimed = []
        for gpu in candidates:
            if len(claimed) < count and (f := _try_lock(locks / f"gpu{gpu}.lock")):
                claimed.append((gpu, f))
        if len(claimed) == count:
            break
        for _, f in claimed:
            f.close()
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no {count} free GPU(s) among {candidates} after {timeout} s")
        if not told:
            print(f"waiting for {count} free GPU(s) among {', '.join(candidates)}", flush=True)
            told = True
        time.sleep(poll)
    _held.extend(f for _, f in claimed)
    ids = [gpu for gpu, _ in claimed]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    return ids


def _try_lock(path: Path):
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f
