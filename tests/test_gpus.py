"""A local job claims GPUs of its own (pruneflow.core.gpus): lock files stand in for devices, so these run on a CPU."""

import os
import subprocess
import sys

import pytest

from pruneflow.core import gpus
from pruneflow.core.gpus import check_gpu_resource, claim_gpus

CLAIM = """
import sys
from pathlib import Path
from pruneflow.core.gpus import claim_gpus
print(claim_gpus(int(sys.argv[1]), sys.argv[2].split(","), Path(sys.argv[3]), poll=0.05, timeout=float(sys.argv[4])))
"""


def other_job(count, candidates, locks, timeout=0.5):
    """A second process (another Snakemake job) claiming GPUs; its answer, or its error."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    proc = subprocess.run([sys.executable, "-c", CLAIM, str(count), ",".join(candidates), str(locks), str(timeout)],
                          capture_output=True, text=True, env=env)
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
