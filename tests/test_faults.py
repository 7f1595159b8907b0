"""Faults: a failed job's log holds its traceback; temporaries of killed jobs are removed by the next
run while those of running jobs are kept; an edited local corpus or model folder reruns what depends
on it, also when the edit landed while its job ran or put back an older file, and so does an edit of the
code a step runs; two runs of one target at once do not both write it; a truncated, deleted or flipped artifact
file fails the job that reads it, naming the file and the fix (the checksums of pruneflow.core.artifacts).

After Snakemake is killed (its job runs on, and the check docs/validation.md gives sees it), Ctrl-C, a write
failing midway (a full disk), two runs at once and a flipped byte, a plain rerun gives the clean run's variant
(tensors and summary) or result. A kill of Snakemake and its job together mid-write: tests/test_robustness.py.
Every workflow test here shares one module run (``finished``), copied for a test that changes it."""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import REPO
from pruneflow.core.artifacts import ArtifactError, load_json, verify_folder
from pruneflow.core.atomic import _HOST, atomic_path, remove_stale_temporaries
from pruneflow.core.runtime import PEAK_RSS_LINE, job
from pruneflow.core.stream import load_variant
from pruneflow.data.calibration import load_calibration
from pruneflow.data.corpora import corpus_splits
from pruneflow.data.jsonl import load_texts
from workflow_helpers import planned, snakemake, tiny_config, write_config

CALIB = "results/tiny/calib/text-n4-l64-s0.safetensors"
MAGNITUDE = "results/tiny/pruned/none/magnitude-u0.5"
DENSE_PPL = "results/tiny/eval/dense/ppl-text-l64-w2-bosauto.json"
SPARSEGPT = "results/tiny/pruned/text-n4-l64-s0/sparsegpt-u0.5-dense"  # a variant with values: SparseGPT updates weights
SPARSEGPT_PPL = f"results/tiny/eval/{SPARSEGPT.removeprefix('results/tiny/')}/ppl-text-l64-w2-bosauto.json"
TARGETS = (CALIB, MAGNITUDE, SPARSEGPT_PPL, DENSE_PPL)
DEAD_NORM = "model.layers.1.input_layernorm.weight"  # one channel at zero: a dead input of block 1's q, k and v
# After Snakemake was killed: the jobs of its run still running here (docs/validation.md; tests/doc_commands.yaml)
STILL_RUNNING = next(e["command"] for e in yaml.safe_load((REPO / "tests" / "doc_commands.yaml").read_text())
                     if e["runner"] == "faults")


# ---------------------------------------------------------------- job logs


def test_an_exception_in_a_job_writes_its_traceback_to_the_log(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(ZeroDivisionError):
        with job(str(log)):
            print("working")
            1 / 0
    text = log.read_text()
    assert "working" in text and "Traceback (most recent call last)" in text and "ZeroDivisionError" in text


def test_a_jobs_log_ends_with_its_exact_peak_memory(tmp_path):
    """Snakemake's benchmark file samples memory every 30 s after a job's first 30 s; the log's last line has the
    exact peak (bench/scale.py reads both), here at least the 400 MB tensor the job held for an instant."""
    log = tmp_path / "job.log"
    with job(str(log)):
        held = torch.ones(100 * 2**20)  # 400 MiB, touched
        del held
    last = log.read_text().splitlines()[-1]
    assert last.startswith(PEAK_RSS_LINE) and float(last.split()[-1]) >= 400


def test_a_finished_job_freezes_its_objects_out_of_the_exit_collection(tmp_path):
    """What the job made is frozen (the interpreter's last collection skips it), and nothing is lost:
    the job's result is still there and a collection after the job still works."""
    gc.unfreeze()
    try:
        with job(str(tmp_path / "job.log")) as info:
            made = [[i] for i in range(1000)]
        assert gc.get_freeze_count() >= len(made) and info["seconds"] >= 0
        gc.collect()
        assert made[999] == [999]
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------- temporaries


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_name_their_writer_and_only_dead_writers_lose_them(tmp_path):
    with atomic_path(tmp_path / "out.json") as tmp:
        assert tmp.parent.name.startswith(f".out.json.{os.getpid()}@{_HOST}.") and tmp.parent.name.endswith(".tmp")
        tmp.write_text("{}")
    assert (tmp_path / "out.json").read_text() == "{}" and list(tmp_path.iterdir()) == [tmp_path / "out.json"]

    dead = tmp_path / "a" / f".x.{_dead_pid()}@{_HOST}.abc123.tmp"
    live = tmp_path / "a" / f".y.{os.getpid()}@{_HOST}.abc123.tmp"
    foreign = tmp_path / "b" / f".z.{_dead_pid()}@another-host.abc123.tmp"
    for d in (dead, live, foreign):
        (d / "part").mkdir(parents=True)
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert live.exists() and foreign.exists()  # a running writer, and one on a host we cannot check


def test_a_new_writer_of_the_same_path_removes_what_a_killed_one_left(tmp_path):
    stale = tmp_path / f".out.{_dead_pid()}@{_HOST}.abc123.tmp"
    other_host = tmp_path / ".out.123@another-host.abc123.tmp"  # Snakemake lets one job write a path at a time
    live = tmp_path / f".out.{os.getpid()}@{_HOST}.abc123.tmp"
    unrelated = tmp_path / f".other.{_dead_pid()}@{_HOST}.abc123.tmp"
    for d in (stale, other_host, live, unrelated):
        d.mkdir()
    with atomic_path(tmp_path / "out") as tmp:
        tmp.mkdir()
    assert not stale.exists() and not other_host.exists()
    assert live.exists() and unrelated.exists()


# ---------------------------------------------------------------- workflow runs


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    """A run of calibration, magnitude and SparseGPT pruning and perplexity on a local text corpus and a
    local copy of the tiny model (both edited by tests below, on copies of this folder)."""
    workdir = tmp_path_factory.mktemp("faults") / "work"
    workdir.mkdir()
    shutil.copytree(tiny_model_dir, workdir / "model")
    weights = workdir / "model" / "model.safetensors"
    state = load_file(weights)
    state[DEAD_NORM][5] = 0  # SparseGPT meets a dead input there: a numerical fallback its summary records
    save_file(state, weights, metadata={"format": "pt"})
    doc = "The committee met on Tuesday and talked about the budget for the coming year. " * 6
    (workdir / "corpus.txt").write_text("\n\n".join(f"Document {i}. {doc}" for i in range(40)))
    config = tiny_config(workdir / "model")
    config["models"]["tiny"]["path"] = "model"
    config["corpora"] = {"text": {"source": "text", "path": "corpus.txt", "eval_fraction": 0.5}}
    config["calibration"]["corpus"] = "text"
    config["perplexity"].update(corpus="text", windows=2)
    config["studies"] = {"s": {"criteria": ["magnitude", "wanda", "sparsegpt"], "patterns": [0.5], "stream": "dense"}}
    config.pop("zeroshot")
    write_config(workdir, config)
    snakemake(workdir, *TARGETS)
    return workdir


@pytest.fixture()
def copy_of(finished, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(finished, work, symlinks=True)
    return work


@pytest.mark.slow
def test_after_a_run_nothing_is_left_to_do(finished):
    assert planned(finished, *TARGETS)[0] == {}


@pytest.mark.slow
def test_an_edited_local_corpus_reruns_what_reads_it(copy_of):
    corpus = copy_of / "corpus.txt"
    corpus.write_text(corpus.read_text() + "\n\nA new document about the weather in the hills. " * 3)
    rules, reasons = planned(copy_of, *TARGETS)
    # magnitude reads no text; SparseGPT's statistics come from the calibration samples
    assert rules == {"corpus": 1, "calibration": 1, "activation_cache": 1, "prune_from_cache": 1, "perplexity": 2}
    assert any("corpus.txt" in r for r in reasons)


@pytest.mark.slow
def test_an_edited_local_model_folder_reruns_the_model_and_below(copy_of):
    cfg = copy_of / "model" / "config.json"
    cfg.write_text(cfg.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    rules, reasons = planned(copy_of, *TARGETS)
    everything, _ = planned(copy_of, *TARGETS, "--forceall")
    everything.pop("corpus")  # the text does not depend on the model
    assert rules == everything and rules["model"] == 1 and rules["calibration"] == 1
    assert any("config.json" in r for r in reasons)


@pytest.mark.slow
def test_killed_writers_temporaries_go_at_the_next_run_running_ones_stay(copy_of):
    """A process killed by SIGKILL leaves its temporary; the next run removes it, but not the
    temporary of a process that is still writing (another run's job on this host)."""
    code = ("import sys, time; from pruneflow.core.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as t:\n t.mkdir(); print(t, flush=True); time.sleep(600)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [subprocess.Popen([sys.executable, "-c", code, str(copy_of / "results" / "x" / name)], stdout=subprocess.PIPE,
                                text=True, env=env, cwd=copy_of) for name in ("killed", "running")]
    killed, running = [os.path.dirname(w.stdout.readline().strip()) for w in writers]
    writers[0].send_signal(signal.SIGKILL)
    writers[0].wait()
    try:
        os.remove(copy_of / DENSE_PPL)  # something to do, so the run starts
        snakemake(copy_of, DENSE_PPL)
        assert not os.path.exists(killed) and os.path.exists(running)
    finally:
        writers[1].kill()
        writers[1].wait()


@pytest.mark.slow
def test_two_runs_of_one_target_at_once_do_not_both_write_it(finished, copy_of):
    shutil.rmtree(copy_of / MAGNITUDE)
    os.remove(copy_of / CALIB)
    first = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(copy_of), "--configfile",
         str(copy_of / "config.yaml"), "--cores", "1", CALIB, MAGNITUDE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    locks = copy_of / ".snakemake" / "locks"
    deadline = time.time() + 120
    while not (locks.exists() and any(locks.iterdir())):
        assert first.poll() is None and time.time() < deadline, "the first run ended before it locked its outputs"
        time.sleep(0.1)
    second = snakemake(copy_of, CALIB, MAGNITUDE, check=False)
    assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert planned(copy_of, CALIB, MAGNITUDE)[0] == {}
    assert torch.equal(load_calibration(copy_of / CALIB), load_calibration(finished / CALIB))  # the clean run's
    _assert_same_variant(copy_of, finished, MAGNITUDE)


@pytest.mark.slow
def test_a_failed_jobs_log_holds_the_traceback(tmp_path, tiny_model_dir):
    """An error inside a job (here: a Hugging Face corpus without network) is in its log, not only
    on the terminal that started it (on a cluster that terminal is gone)."""
    config = tiny_config(tiny_model_dir)
    config["corpora"]["c4"] = {"source": "hf", "name": "c4", "max_documents": 10}
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "results/corpora/c4/calib.jsonl", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "results/logs/corpora/c4.log").read_text()
    assert "Traceback (most recent call last)" in log and "CorpusError: could not load Hugging Face dataset 'allenai/c4'" in log
    assert not (tmp_path / "results/corpora/c4").exists() or not any((tmp_path / "results/corpora/c4").iterdir())


# ---------------------------------------------------------------- inputs changed during and between runs (issue 39)
# A change that lands while a job reads a file fails that job (tests/test_provenance.py); one that slips past it
# leaves what these tests make: the file edited, its modification time older than the job's outputs (Snakemake
# touches them when the job ends), which Snakemake's own trigger does not see. So does an older file put back.


def _edit_keeping_time(path, edit) -> None:
    before = os.stat(path)
    edit(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.slow
def test_a_corpus_appended_during_its_job_and_then_put_back_gives_the_clean_runs_values(finished, copy_of):
    corpus, splits = copy_of / "corpus.txt", copy_of / "results/corpora/text"
    original, clean = corpus.read_bytes(), load_json(copy_of / DENSE_PPL)["perplexity"]
    added = "".join(f"\n\nNew document {i}: rain fell on the hills and the rivers rose by noon." for i in range(6))
    _edit_keeping_time(corpus, lambda p: p.write_bytes(original + added.encode()))
    # magnitude reads no text; SparseGPT's cache and variant read the calibration samples
    assert planned(copy_of, *TARGETS)[0] == {"corpus": 1, "calibration": 1, "activation_cache": 1, "prune_from_cache": 1, "perplexity": 2}
    run = snakemake(copy_of, *TARGETS)
    assert "corpus.txt: changed since results/corpora/text/calib.jsonl was made from it" in run.stdout + run.stderr
    clean_splits = corpus_splits({"source": "text", "path": str(corpus), "eval_fraction": 0.5})  # a clean run's
    assert [load_texts(splits / f"{p}.jsonl") for p in ("calib", "eval")] == list(clean_splits.values())
    assert all(any(d.startswith("New document") for d in docs) for docs in clean_splits.values())
    _edit_keeping_time(corpus, lambda p: p.write_bytes(original))  # the older file put back (a backup, a checkout)
    snakemake(copy_of, *TARGETS)
    assert load_json(copy_of / DENSE_PPL)["perplexity"] == clean
    assert (splits / "eval.jsonl").read_bytes() == (finished / "results/corpora/text/eval.jsonl").read_bytes()


@pytest.mark.slow
def test_a_local_models_config_changed_during_the_model_job_is_read_again(copy_of):
    config = copy_of / "model" / "config.json"
    _edit_keeping_time(config, lambda p: p.write_text(p.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05')))
    rules, _ = planned(copy_of, *TARGETS)
    # the corpus does not read the model; everything else does
    assert rules == {"model": 1, "calibration": 1, "prune_by_score": 1, "activation_cache": 1, "prune_from_cache": 1, "perplexity": 2}
    snakemake(copy_of, "results/tiny/dense")
    stored = copy_of / "results/tiny/dense/model/config.json"
    assert json.loads(stored.read_text())["rms_norm_eps"] == 1e-05


@pytest.mark.slow
def test_an_edit_of_the_code_a_step_runs_plans_it_again_and_a_comment_does_not(copy_of, tmp_path):
    checkout = tmp_path / "checkout"  # this checkout's workflow and library, elsewhere: a moved checkout reruns nothing
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("Snakefile", "claims.yaml", "rules", "scripts", "src", "bench/results", "envs"):
        source, target = REPO / part, checkout / part
        if source.is_dir():
            shutil.copytree(source, target, ignore=skip)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    module = checkout / "src/pruneflow/evaluate/perplexity.py"
    module.write_text(module.read_text().replace('"""', '"""A docstring edited. ', 1) + "# a comment\n")
    assert planned(copy_of, *TARGETS, checkout=checkout)[0] == {}
    module.write_text(module.read_text() + "EDITED = True\n")  # code: perplexity jobs run it, nothing else does
    rules, reasons = planned(copy_of, *TARGETS, checkout=checkout)
    assert rules == {"perplexity": 2} and any("Params have changed" in r for r in reasons)  # the dense model's and SparseGPT's


# ---------------------------------------------------------------- corrupted artifacts (issue #13)
def _failure_names(copy_of, target, path):
    """Running ``target`` (which reads ``path``) fails, naming the file and the fix."""
    proc = snakemake(copy_of, target, check=False)
    out = proc.stdout + proc.stderr + "".join(p.read_text() for p in (copy_of / "results" / "logs").rglob("*.log"))
    assert proc.returncode != 0 and str(path) in out and "delete " in out and " and rerun" in out, out[-3000:]


@pytest.mark.slow
def test_a_truncated_calibration_file_fails_with_its_path(copy_of):
    path = copy_of / CALIB
    path.write_bytes(path.read_bytes()[:100])
    _failure_names(copy_of, "results/tiny/acts/text-n4-l64-s0", CALIB)


@pytest.mark.slow
def test_a_truncated_mask_fails_with_its_path(copy_of):
    path = copy_of / MAGNITUDE / "masks" / "block001.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    _failure_names(copy_of, "results/tiny/eval/pruned/none/magnitude-u0.5/ppl-text-l64-w2-bosauto.json", path.relative_to(copy_of))


@pytest.mark.slow
def test_a_deleted_mask_block_is_noticed(copy_of):
    path = copy_of / MAGNITUDE / "masks" / "block001.safetensors"
    os.remove(path)
    _failure_names(copy_of, "results/tiny/eval/pruned/none/magnitude-u0.5/ppl-text-l64-w2-bosauto.json", MAGNITUDE)


# ---------------------------------------------------------------- every kind of artifact, one byte flipped (issue 39)
@pytest.mark.slow
def test_one_flipped_byte_in_any_file_of_any_artifact_is_refused_naming_it(copy_of):
    """Every file of the dense model, a masks-only and a values variant, the activation cache and the calibration
    samples (results, tables and corpus splits: their own tests), one byte in its middle flipped: its reader (the one
    the jobs use) refuses it, naming the file (or the manifest that lists it) and the fix."""
    readers = {"results/tiny/dense": load_variant, MAGNITUDE: load_variant, SPARSEGPT: load_variant,
               "results/tiny/acts/text-n4-l64-s0": verify_folder, CALIB: load_calibration}
    checked = 0
    for artifact, read in readers.items():
        path = copy_of / artifact
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
        for f in files:
            clean = f.read_bytes()
            flipped = bytearray(clean)
            flipped[len(clean) // 2] ^= 0x04
            f.write_bytes(bytes(flipped))
            with pytest.raises(ArtifactError) as err:
                read(path)
            f.write_bytes(clean)
            named = str(f) in str(err.value) or str(path / "manifest.json") in str(err.value)
            assert named and f"delete {path} and rerun" in str(err.value), (f, str(err.value))
            checked += 1
    assert checked >= 30


@pytest.mark.slow
def test_a_flipped_value_fails_the_reading_job_and_the_fix_gives_the_clean_result(finished, copy_of):
    """SparseGPT's stored values with one bit flipped: its perplexity job fails naming the file and "delete … and
    rerun"; done as said, the rerun gives the clean run's perplexity, to the last digit."""
    part = copy_of / SPARSEGPT / "values" / "block001.safetensors"
    data = bytearray(part.read_bytes())
    data[-100] ^= 0x01  # the last bit of a stored float32 weight
    part.write_bytes(bytes(data))
    os.remove(copy_of / SPARSEGPT_PPL)  # so that something reads the variant
    _failure_names(copy_of, SPARSEGPT_PPL, part.relative_to(copy_of))
    shutil.rmtree(copy_of / SPARSEGPT)  # what the message says
    snakemake(copy_of, SPARSEGPT_PPL)
    result, clean = (json.loads((w / SPARSEGPT_PPL).read_text()) for w in (copy_of, finished))
    assert result["perplexity"] == clean["perplexity"] and result["nll"] == clean["nll"]


# ---------------------------------------------------------------- killed, interrupted, out of space (issue 39)
def _start(workdir, *targets, **popen) -> subprocess.Popen:
    """A Snakemake run of ``targets`` (as :func:`workflow_helpers.snakemake` runs it), not waited for; its output
    goes to ``run.log`` (a file: a job that outlives Snakemake must not write into a closed pipe)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--replace-workflow-config", "--cores", "2", *targets]
    with open(workdir / "run.log", "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen)


def _jobs(workdir) -> list[int]:
    """Processes running a job of a Snakemake run in ``workdir`` (each runs a script Snakemake wrote there)."""
    marker = f"{workdir}/.snakemake/scripts/".encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in open(f"/proc/{pid}/cmdline", "rb").read():
                pids.append(int(pid))
        except OSError:  # gone meanwhile
            pass
    return pids


def _wait_for_job(workdir, run: subprocess.Popen) -> int:
    """The first job's process, as soon as it starts (its imports alone take seconds: it is surely still running)."""
    deadline = time.time() + 300
    while not (pids := _jobs(workdir)):
        assert run.poll() is None and time.time() < deadline, (workdir / "run.log").read_text()[-3000:]
        time.sleep(0.02)
    return pids[0]


def _tensors(folder) -> dict:
    return {str(f.relative_to(folder)): load_file(f) for f in sorted(folder.rglob("*.safetensors"))}


def _assert_same_variant(workdir, clean, variant) -> None:
    """The same stored tensors (masks, values) and summary as the clean run's variant, and no temporary left."""
    got, want = _tensors(workdir / variant), _tensors(clean / variant)
    assert got.keys() == want.keys() and got
    assert all(torch.equal(got[f][n], want[f][n]) for f in want for n in want[f])
    assert json.loads((workdir / variant / "summary.json").read_text()) == json.loads((clean / variant / "summary.json").read_text())
    assert not list((workdir / "results").rglob("*.tmp"))


@pytest.mark.slow
def test_after_snakemake_alone_is_killed_its_job_runs_on_and_the_documented_check_sees_it(finished, copy_of):
    """`kill -9` of Snakemake (not its job): the job runs on and writes its variant. docs/validation.md's check lists
    it while it runs and nothing once it ended; then --unlock and a plain rerun (the job was never marked complete)
    give the clean run's variant."""
    shutil.rmtree(copy_of / SPARSEGPT)
    run = _start(copy_of, SPARSEGPT)
    job = _wait_for_job(copy_of, run)
    run.send_signal(signal.SIGKILL)
    run.wait()
    check = subprocess.run(["bash", "-c", STILL_RUNNING], cwd=copy_of, capture_output=True, text=True)
    assert check.returncode == 0 and f"{job} " in check.stdout and "prune_from_cache.py" in check.stdout, check
    deadline = time.time() + 300
    while os.path.exists(f"/proc/{job}") and time.time() < deadline:
        time.sleep(0.1)
    check = subprocess.run(["bash", "-c", STILL_RUNNING], cwd=copy_of, capture_output=True, text=True)
    assert check.returncode == 1 and check.stdout == "", check  # pgrep: nothing matched
    snakemake(copy_of, "--unlock")
    snakemake(copy_of, SPARSEGPT)
    _assert_same_variant(copy_of, finished, SPARSEGPT)


@pytest.mark.slow
def test_ctrl_c_stops_run_and_job_and_a_plain_rerun_gives_the_clean_variant(finished, copy_of):
    """Ctrl-C in the terminal (SIGINT to Snakemake and its jobs, one process group): nothing runs on, no half-written
    variant (none, or, where Snakemake chose to let the job finish, the clean one), no lock left (the rerun needs no
    --unlock), and the rerun gives the clean run's variant."""
    shutil.rmtree(copy_of / SPARSEGPT)
    run = _start(copy_of, SPARSEGPT, start_new_session=True)
    _wait_for_job(copy_of, run)
    os.killpg(run.pid, signal.SIGINT)
    run.wait(timeout=300)  # its exit status is Snakemake's choice (seen 0 when the signal met it between two steps)
    assert not _jobs(copy_of)
    if (copy_of / SPARSEGPT).exists():  # seen once in 2 full runs: Snakemake finished the running job, then stopped
        _assert_same_variant(copy_of, finished, SPARSEGPT)
    snakemake(copy_of, SPARSEGPT)
    _assert_same_variant(copy_of, finished, SPARSEGPT)


@pytest.mark.slow
def test_a_write_failing_midway_leaves_no_variant_and_a_rerun_gives_the_clean_one(finished, copy_of):
    """The disk fills while the SparseGPT variant is written: a file-size limit of 32 KiB on the run stands in for it
    (the same OSError at write, needing neither root nor a mount): the masks (5 KB a block) fit, the first values
    file (74 KB) does not. No variant is left, and the rerun with space again gives the clean run's variant."""
    limit = 32 * 1024
    sizes = {f.parent.name: f.stat().st_size for f in (finished / SPARSEGPT).rglob("block000.safetensors")}
    assert sizes["masks"] < limit < sizes["values"]
    shutil.rmtree(copy_of / SPARSEGPT)
    snakemake(copy_of, SPARSEGPT, "--dry-run")  # the plan's checksum cache (.snakemake/pruneflow) written with space, as by any earlier run
    run = _start(copy_of, SPARSEGPT, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert run.wait(timeout=600) != 0
    log = (copy_of / "results/logs" / f"{SPARSEGPT.removeprefix('results/')}.log").read_text()
    assert "File too large" in log and "could not write " in log and "/values/" in log, log[-3000:]
    assert not (copy_of / SPARSEGPT).exists()
    snakemake(copy_of, SPARSEGPT)
    _assert_same_variant(copy_of, finished, SPARSEGPT)


# ---------------------------------------------------------------- a numerical fallback in a workflow run (issue 39)
@pytest.mark.slow
def test_the_sparsegpt_variant_records_its_fallback_per_layer_and_logs_it(finished):
    """The fixture's model has a dead input in block 1 (its attention norm's channel 5 is zero): the SparseGPT job's
    summary counts it at the layer whose inverse factor met it, and its log names that layer."""
    summary = json.loads((finished / SPARSEGPT / "summary.json").read_text())
    assert summary["fallbacks"] == {"model.layers.1.self_attn.q_proj": {"dead_inputs": 1}}
    log = (finished / "results/logs" / f"{SPARSEGPT.removeprefix('results/')}.log").read_text()
    assert "numerical fallback at model.layers.1.self_attn.q_proj: 1 of 64 inputs were never nonzero" in log
    assert json.loads((finished / SPARSEGPT_PPL).read_text())["summary"]["fallbacks"] == summary["fallbacks"]  # the tables' input
