"""A one-node SLURM cluster from Debian's packages, started in a directory and stopped again.

munged, slurmctld and slurmd run as children of the test on free ports, with their config, state and logs
in that directory and munge's key and socket in a temporary one (no accounting database, as on many small
clusters). Memory limits are
enforced by sampling each job step's RSS every second (jobacct_gather/linux, OverMemoryKill): containers
rarely give slurmd cgroups it can manage.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


def install() -> str | None:
    """Install the packages when a daemon is missing; the reason when they cannot be, else None."""
    if all(shutil.which(d) for d in DAEMONS) and shutil.which("sbatch"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"SLURM is not installed and this machine cannot install it (needs root and apt-get: {' '.join(PACKAGES)})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        return f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    total_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    return total_kb // 1024


class Cluster:
    """``env`` is what a client (sbatch, squeue, Snakemake) needs: SLURM_CONF and PATH with the shims."""

    def __init__(self, root: Path):
        self.root, self.procs = root, []
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.sbatch_log = root / "sbatch.jsonl"
        for sub in ("state", "spool", "log", "bin"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # munged wants every directory above its socket searchable by all; pytest's are private
        self.munge = Path(tempfile.mkdtemp(prefix="pruneflow-munge-"))
        self.munge.chmod(0o711)
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
                    "PRUNEFLOW_SBATCH_LOG": str(self.sbatch_log)}

    def _write_config(self) -> None:
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=pruneflow-test", f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge}/munge.sock",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherParams=OverMemoryKill",
            "JobAcctGatherFrequency=task=1", "MpiDefault=none", "ReturnToService=2",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={len(os.sched_getaffinity(0))} "
            f"RealMemory={_memory_mb()} State=UNKNOWN",
            # the partitions profiles/slurm names, both on the one node
            "PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP", ""]))

    def _write_shims(self) -> None:
        bin_dir = self.root / "bin"
        # Records each sbatch call's arguments (one JSON list a line), then submits it.
        (bin_dir / "sbatch").write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            "with open(os.environ['PRUNEFLOW_SBATCH_LOG'], 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
            f"os.execv({shutil.which('sbatch')!r}, ['sbatch', *sys.argv[1:]])\n")
        # The jobstep plugin drops SLURM_* (SLURM_CONF too) from the srun it starts in a job; a real
        # cluster's srun reads /etc/slurm/slurm.conf, this one's config is in a temporary directory.
        (bin_dir / "srun").write_text(f"#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which('srun')} \"$@\"\n")
        for shim in ("sbatch", "srun"):
            (bin_dir / shim).chmod(0o755)

    def _spawn(self, *cmd: str) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def start(self, timeout: float = 60) -> None:
        r = self.root
        key = self.munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._write_config()
        self._write_shims()
        m = self.munge
        self._spawn("munged", "-F", f"--key-file={key}", f"--socket={m}/munge.sock", f"--pid-file={m}/munged.pid",
                    f"--log-file={r}/log/munged.log", f"--seed-file={m}/seed")
        deadline = time.monotonic() + timeout
        while not (m / "munge.sock").exists() and self.procs[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the SLURM daemons exit when they cannot reach munged
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", self.node)
        state = None
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            if state == ["idle"] * 2:  # the node, listed once per partition
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(1)
        raise RuntimeError(f"SLURM did not start (node state {state}):\n{self.logs()}")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, check=check, timeout=60)

    def sbatch_calls(self) -> list[list[str]]:
        lines = self.sbatch_log.read_text().splitlines() if self.sbatch_log.exists() else []
        return [json.loads(line) for line in lines]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").iterdir()))

    def stop(self) -> None:
        if self.procs and self.procs[-1].poll() is None:  # no job outlives the test
            jobs = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
            if jobs:
                self.run("scancel", "--full", *jobs, check=False)
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        shutil.rmtree(self.munge, ignore_errors=True)
