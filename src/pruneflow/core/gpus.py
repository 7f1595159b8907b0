"""Every GPU used: a local job claims GPUs of its own, so ``--resources gpu=N`` runs N jobs on N devices.

Snakemake's ``gpu`` resource only counts: with ``--resources gpu=4`` four GPU jobs run at once, and without
more each would take GPU 0. A job therefore claims the GPUs it asked for (its rule's ``gpu`` resource) before
torch touches CUDA: an exclusive ``flock`` on one lock file per GPU, held until the process ends (the OS
releases it even after a crash), then ``CUDA_VISIBLE_DEVICES`` set to the claimed ones. Under SLURM the
scheduler has already given the job its GPUs and set ``CUDA_VISIBLE_DEVICES``: nothing is claimed.

The lock folder is shared by every user of the machine, so two users' runs do not take one GPU: it is made
sticky and writable by all (like /tmp), and a lock file is opened read-only and made readable by all (``flock``
needs no write permission), so any user can lock a file another user made. What still fails (a file or folder
made unreadable or unwritable by hand or by an old version) stops the job with :class:`GpuLockError` naming the
path, its owner and the fix.

Nothing here imports torch: torch reads ``CUDA_VISIBLE_DEVICES`` once, when CUDA starts, and the workflow
checks ``--resources gpu=N`` against :func:`gpu_ids` while it builds the DAG.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import stat
import subprocess
import tempfile
import time
from pathlib import Path

LOCKS = Path(tempfile.gettempdir()) / "pruneflow-gpu-locks"
_held: list = []  # open lock files: closing one (or the process ending) frees its GPU


class GpuLockError(RuntimeError):
    """A GPU's lock file could not be made or locked; the message names the path, its owner and the fix."""


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
    _lock_folder(locks)
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


def _lock_folder(locks: Path) -> None:
    """Make the shared lock folder (sticky and writable by every user, whatever the umask) or check the one there."""
    try:
        locks.mkdir(parents=True, exist_ok=True)
        info = locks.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise GpuLockError(f"{locks}: the GPU lock folder is not a folder (a symlink or a file, owned by "
                               f"{_owner(info.st_uid)}); delete it, and the next job makes the folder")
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o1777:
            os.chmod(locks, 0o1777)  # every user may add a lock file; only its owner may delete it
    except OSError as err:
        raise GpuLockError(f"{locks}: the GPU lock folder cannot be made or opened ({err.strerror})") from None


def _try_lock(path: Path):
    """The open lock file of a free GPU, or None while another process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise GpuLockError(_cannot(path, "open", err)) from None
    f = os.fdopen(fd, "rb")
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o644)  # readable, so lockable, by every user whatever this one's umask
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except OSError as err:
        f.close()
        raise GpuLockError(_cannot(path, "lock", err)) from None
    return f


def _cannot(path: Path, what: str, err: OSError) -> str:
    """Why a GPU lock file could not be opened or locked, whose it is, and the fix."""
    if err.errno == errno.ELOOP:  # not followed: it could point anywhere
        return f"{path}: a symbolic link where a GPU lock file belongs (owner {_owner(path.lstat().st_uid)}); delete it"
    if err.errno not in (errno.EACCES, errno.EPERM):  # no locks on this file system, read-only, ...
        return (f"{path}: cannot {what} this GPU lock file ({err.strerror}); put the lock folder on a local file "
                f"system that takes locks: set TMPDIR (the folder is $TMPDIR/{path.parent.name})")
    try:
        info = path.lstat()
        whose = f"owner {_owner(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):o}"
        fix = (f"ask {_owner(info.st_uid)} to run `chmod a+r {path}` (or to delete it while no job of theirs runs)"
               if info.st_uid != os.geteuid() else "delete it while no job of yours runs")
    except FileNotFoundError:  # not made: the folder does not let this user add a file
        folder = path.parent.stat()
        whose = f"the folder's owner {_owner(folder.st_uid)}, mode {stat.S_IMODE(folder.st_mode):o}"
        fix = f"ask {_owner(folder.st_uid)} to run `chmod 1777 {path.parent}`"
    return f"{path}: cannot {what} this GPU lock file ({err.strerror}; {whose}); {fix}"


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
