"""A local job claims GPUs of its own (pruneflow.core.gpus): lock files stand in for devices, so these run on a CPU."""

import fcntl
import os
import stat
import subprocess
import sys

import pytest

from pruneflow.core import gpus
from pruneflow.core.gpus import GpuLockError, check_gpu_resource, claim_gpus
from workflow_helpers import as_ordinary_user

CLAIM = """
import sys
from pathlib import Path
from pruneflow.core.gpus import claim_gpus
print(claim_gpus(int(sys.argv[1]), sys.argv[2].split(","), Path(sys.argv[3]), poll=0.05, timeout=float(sys.argv[4])))
"""


def other_job(count, candidates, locks, timeout=0.5, as_other_user=False):
    """A second process (another Snakemake job) claiming GPUs; its answer, or its error. ``as_other_user``: with file
    permissions applied as to any user and umask 077 (see :func:`_as_another_user`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    proc = subprocess.run([sys.executable, "-c", CLAIM, str(count), ",".join(candidates), str(locks), str(timeout)],
                          capture_output=True, text=True, env=env, preexec_fn=_as_another_user if as_other_user else None)
    return (proc.stdout + proc.stderr).strip().splitlines()[-1]


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    yield
    for f in gpus._held:
        f.close()
    gpus._held.clear()


def test_two_jobs_get_different_gpus_and_a_third_waits(tmp_path, clean):
    assert claim_gpus(1, ["0", "1", "2"], tmp_path) == ["0"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # torch sees only the claimed GPU
    assert other_job(1, ["0", "1", "2"], tmp_path) == "['1']"  # the first job still holds GPU 0
    assert other_job(2, ["0", "1", "2"], tmp_path) == "['1', '2']"  # that job ended: 1 is free again
    assert "TimeoutError" in other_job(3, ["0", "1", "2"], tmp_path)  # 3 of 3 while GPU 0 is held: waits
    for f in gpus._held:
        f.close()
    gpus._held.clear()
    assert other_job(3, ["0", "1", "2"], tmp_path) == "['0', '1', '2']"  # released with the job


def test_slurm_and_cpu_jobs_claim_nothing(tmp_path, clean, monkeypatch):
    assert claim_gpus(0, ["0"], tmp_path) is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert claim_gpus(1, ["0"], tmp_path) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_more_gpus_than_visible_is_an_error_naming_both(tmp_path, clean):
    with pytest.raises(ValueError, match="asked for 2 GPU.*1 are visible \\(0\\)"):
        claim_gpus(2, ["0"], tmp_path)
    with pytest.raises(ValueError, match="gpu=4 but this machine has 2 GPU.*allowed: gpu=1..2"):
        check_gpu_resource(4, ["0", "1"])
    check_gpu_resource(2, ["0", "1"])


def test_visible_devices_are_the_candidates(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert gpus.gpu_ids() == ["2", "5"]


# ---------------------------------------------------------------- another user's lock files
NOBODY = 65534


def _as_another_user():
    """In the child before it starts: file permissions as any user meets them, and a strict umask as some have."""
    as_ordinary_user()
    os.umask(0o077)


@pytest.fixture
def nobodys(tmp_path):
    """A function making a path another user's (nobody's) with a mode; needs root, as chown does."""
    if os.geteuid() != 0:
        pytest.skip("making a file another user's needs root (CI runs the tests as root)")

    def give(path, mode):
        os.chown(path, NOBODY, NOBODY)
        os.chmod(path, mode)
        return path

    return give


def test_another_users_lock_files_are_locked_not_refused(tmp_path, clean, nobodys):
    """Another user's job made the folder and the lock files (0644, as open(path, 'a') made them): this user's job
    locks them (flock needs only a read-only descriptor) and adds its own, readable by all whatever its umask."""
    locks = tmp_path / "locks"
    locks.mkdir()
    nobodys(locks, 0o1777)
    for gpu in ("0", "1"):
        (locks / f"gpu{gpu}.lock").touch()
        nobodys(locks / f"gpu{gpu}.lock", 0o644)
    theirs = open(locks / "gpu0.lock", "rb")  # the other user's job holds GPU 0
    fcntl.flock(theirs, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert other_job(1, ["0", "1"], locks, as_other_user=True) == "['1']"
    assert "TimeoutError" in other_job(2, ["0", "1"], locks, as_other_user=True)
    theirs.close()
    assert other_job(3, ["0", "1", "2"], locks, as_other_user=True) == "['0', '1', '2']"
    made = (locks / "gpu2.lock").stat()
    assert made.st_uid == 0 and stat.S_IMODE(made.st_mode) == 0o644  # lockable by the other user in turn


def test_an_unusable_lock_file_or_folder_stops_with_its_owner_and_the_fix(tmp_path, clean, nobodys):
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "gpu0.lock").touch()
    nobodys(locks / "gpu0.lock", 0o600)  # unreadable to others: whether GPU 0 is held cannot be known
    nobodys(locks, 0o1777)
    told = other_job(1, ["0", "1"], locks, as_other_user=True)
    assert told.startswith("pruneflow.core.gpus.GpuLockError: ") and (
        f"{locks / 'gpu0.lock'}: cannot open this GPU lock file (Permission denied; owner nobody (uid 65534), mode 600); "
        f"ask nobody (uid 65534) to run `chmod a+r {locks / 'gpu0.lock'}`") in told
    nobodys(locks, 0o755)  # a folder made by an old version: no one else may add a lock file
    (locks / "gpu0.lock").unlink()
    told = other_job(1, ["0"], locks, as_other_user=True)
    assert (f"{locks / 'gpu0.lock'}: cannot open this GPU lock file (Permission denied; the folder's owner nobody "
            f"(uid 65534), mode 755); ask nobody (uid 65534) to run `chmod 1777 {locks}`") in told
    (locks / "gpu0.lock").symlink_to(tmp_path / "elsewhere.lock")  # not followed, wherever it points
    with pytest.raises(GpuLockError, match=rf"{locks / 'gpu0.lock'}: a symbolic link where a GPU lock file belongs "
                                           rf"\(owner root \(uid 0\)\); delete it"):
        claim_gpus(1, ["0"], locks)
    assert not (tmp_path / "elsewhere.lock").exists()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(GpuLockError, match=rf"{tmp_path / 'link'}: the GPU lock folder is not a folder \(a symlink"):
        claim_gpus(1, ["0"], tmp_path / "link")


def test_the_lock_folder_is_made_sticky_and_writable_by_all_whatever_the_umask(tmp_path, clean):
    old = os.umask(0o077)
    try:
        assert claim_gpus(1, ["0"], tmp_path / "locks") == ["0"]
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "locks").stat().st_mode) == 0o1777
    assert stat.S_IMODE((tmp_path / "locks" / "gpu0.lock").stat().st_mode) == 0o644
