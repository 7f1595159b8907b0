"""Memory per rule kind from the model's shape (pruneflow.spec.resources): what grows with the model and what
does not, the benchmark files it reads, and the whole-model recoveries stopped before any job."""

import copy

import pytest

from conftest import REPO
from pruneflow.spec.config import ConfigError, with_defaults
from pruneflow.spec.preflight import check_config
from pruneflow.spec.resources import (
    check_whole_model_recoveries,
    job_peaks,
    kind_of_benchmark,
    parse_size,
    shape_of,
    zeroshot_request_tokens,
)
from pruneflow.spec.zeroshot import LOCAL_REQUEST_BYTES
from workflow_helpers import tiny_config

LLAMA = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
         "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}
CONFIG = {"calibration": {"nsamples": 128, "seqlen": 2048}, "perplexity": {"seqlen": 2048},
          "runtime": {"eval_batch_size": 1}, "retraining": {"batch_size": 1}}


def test_shape_counts_llama_7b():
    shape = shape_of(LLAMA, "bfloat16")
    assert shape.params == 6_738_415_616 - (2 * 32 + 1) * 4096  # transformers' count of LLaMA-2-7B less the norms
    assert shape.model_bytes == 2 * shape.params


def test_streamed_jobs_do_not_grow_with_depth_and_retraining_does():
    shallow, deep = (job_peaks({**LLAMA, "num_hidden_layers": n}, "bfloat16", CONFIG) for n in (8, 80))
    for kind in ("prune_sequential", "prune_from_cache", "prune_structured", "activation_cache", "recon", "perplexity", "zeroshot"):
        assert deep[kind]["host"] == shallow[kind]["host"], kind  # a block at a time, however many blocks
    assert deep["retrain"]["host"] > 5 * shallow["retrain"]["host"] / 2  # the frozen model is held once
    assert deep["recon_full"]["device"] > deep["retrain"]["device"] > deep["recon"]["device"]


def test_zeroshot_holds_its_blocks_not_the_model_unless_told():
    """runtime.zeroshot_blocks: a CPU run holds a block (auto) or N, whatever the depth; all holds what accelerate
    places in memory (runtime.max_memory.cpu), and a GPU run (auto: all) the whole model on the device."""
    def peaks(blocks, **runtime):
        return job_peaks({**LLAMA, "num_hidden_layers": blocks}, "bfloat16", {**CONFIG, "runtime": {**CONFIG["runtime"], **runtime}})["zeroshot"]

    block = shape_of(LLAMA, "bfloat16").block_params * 2
    assert peaks(8)["host"] == peaks(80)["host"] == peaks(80, zeroshot_blocks=1)["host"]
    assert peaks(80, zeroshot_blocks=4)["host"] - peaks(80)["host"] == 3 * block
    assert peaks(80, zeroshot_blocks="all")["host"] - peaks(8, zeroshot_blocks="all")["host"] == 72 * block
    capped = {"zeroshot_blocks": "all", "max_memory": {"cpu": "8GB"}}  # 20 blocks: the rest on disk
    assert peaks(80, **capped)["host"] == peaks(24, **capped)["host"]
    assert peaks(80)["device"] - peaks(8)["device"] == 72 * block


def test_zeroshot_logits_are_sized_by_the_longest_request():
    """A local task's longest request in bytes, an lm-eval task's context (the model's positions, else lm-eval's 2048)."""
    model = {**LLAMA, "max_position_embeddings": 4096}
    assert zeroshot_request_tokens(model, {"zeroshot": {"tasks": ["lastword", "browncloze"]}}) == LOCAL_REQUEST_BYTES["lastword"] + 1
    assert zeroshot_request_tokens(model, {"zeroshot": {"tasks": ["browncloze", "hellaswag"]}}) == 4096
    assert zeroshot_request_tokens(LLAMA, {"zeroshot": {"tasks": ["hellaswag"]}}) == 2048
    assert zeroshot_request_tokens({**LLAMA, "max_position_embeddings": 256}, {"zeroshot": {"tasks": ["lastword"]}}) == 256
    short, long = ({**CONFIG, "zeroshot": {"tasks": tasks}} for tasks in (["browncloze"], ["lastword"]))
    grows = job_peaks(model, "bfloat16", long)["zeroshot"]["host"] - job_peaks(model, "bfloat16", short)["zeroshot"]["host"]
    tokens = LOCAL_REQUEST_BYTES["lastword"] - LOCAL_REQUEST_BYTES["browncloze"]  # x eval_batch_size 1
    assert grows == tokens * (2 * 32000 + 4 * 4096 + 3 * 11008) * 2  # logits and log-softmax, activations; bfloat16


def test_every_rule_kind_is_read_from_its_benchmark_file():
    paths = {
        "corpora/wiki.tsv": "corpus", "report/sweep.tsv": "report", "zeroshot/tasks/lastword-n8-s0.tsv": "zeroshot_task",
        "m/dense.tsv": "model", "m/calib/brown-n16-l256-s0.tsv": "calibration", "m/acts/brown-n16-l256-s0.tsv": "activation_cache",
        "m/allocation/c/owl-m5-l0.08-u0.5.tsv": "allocation", "m/pruned/c/wanda-u0.5-seq.tsv": "prune_sequential",
        "m/pruned/c/wanda-u0.5-dense.tsv": "prune_by_score", "m/pruned/c/magnitude-u0.5.tsv": "prune_by_score",
        "m/pruned/c/sparsegpt-2of4-dense.tsv": "prune_from_cache", "m/structured/c/fluctuation-neurons0.25-liar.tsv": "prune_structured_liar",
        "m/recovered/c/wanda-u0.5-seq/c/recon-sublayer-pruned-all-12345678.tsv": "recon",
        "m/recovered/c/wanda-u0.5-seq/c/retrain-norms+masklora-12345678.tsv": "retrain_adapter",
        "m/recovered/c/wanda-u0.5-seq/c/retrain-norms+lora-12345678.tsv": "retrain",
        "m/recovered/c/wanda-u0.5-seq/c/retrain-norms-12345678.tsv": "retrain",
        "m/pruned/c/sparsegpt-2of4-owl-m5-l0.08-seq.tsv": "prune_sparsegpt",
        "m/structured/c/fluctuation-neurons0.25-none.tsv": "prune_structured",
        "m/structured/c/fluctuation-heads0.2-liar_weightauto.tsv": "prune_structured_liar",
        "m/recovered/c/wanda-u0.5-seq/c/retrain-norms+full-12345678.tsv": "retrain_full",
        "m/recovered/c/wanda-u0.5-seq/c/recon-full-pruned-all-12345678.tsv": "recon_full",
        "m/eval/dense/ppl-wiki-l512-w4-bosauto.tsv": "perplexity", "m/eval/dense/zeroshot-lastword-n8-s0.tsv": "zeroshot",
        "m/eval/structured/c/x/speed-l256.tsv": "speed",
    }
    assert {p: kind_of_benchmark(p) for p in paths} == paths
    with pytest.raises(ValueError, match="m/odd/x.tsv"):
        kind_of_benchmark("m/odd/x.tsv")


def test_sizes_parse_and_bad_ones_are_named():
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("300MB") == 300 * 10**6 and parse_size(7) == 7
    with pytest.raises(ValueError, match="'a lot'.*allowed a byte count"):
        parse_size("a lot")


def full_recovery_config(tiny_model_dir, **runtime):
    config = tiny_config(tiny_model_dir)
    config["studies"]["recovery"]["recoveries"] = ["none", "recon:sublayer", "retrain:norms+full"]
    config["runtime"].update(runtime)
    return config


def test_whole_model_recovery_beyond_declared_memory_stops_before_any_job(tiny_model_dir):
    config = full_recovery_config(tiny_model_dir, max_memory={"cpu": "1MB"})
    with pytest.raises(ConfigError, match=r"studies.recovery.recoveries: 'retrain:norms\+full' trains the whole model.*"
                                          r"needs about 0.\d GB on the CPU.*allows 0.0 GB; allowed: a layer-wise recovery"):
        check_config(config, ".", REPO)
    layerwise = copy.deepcopy(config)
    layerwise["studies"]["recovery"]["recoveries"] = ["recon:sublayer", "retrain:norms"]
    check_config(layerwise, ".", REPO)  # a block at a time: not checked against the whole-model limit
    check_config(full_recovery_config(tiny_model_dir, max_memory={"cpu": "64GB"}), ".", REPO)
    check_config(full_recovery_config(tiny_model_dir), ".", REPO)  # nothing declared: nothing to check


def test_gpu_limit_is_per_gpu_times_the_gpus_a_job_may_take(tiny_model_dir):
    config = with_defaults(full_recovery_config(tiny_model_dir, device="cuda", max_memory={"cuda": "3MB"}, gpus=1))
    peaks = {"retrain_full": {"host": 1e12, "device": 5e6}}
    with pytest.raises(ConfigError, match="on 1 GPU"):
        check_whole_model_recoveries(config, peaks)
    config["runtime"]["gpus"] = 2
    check_whole_model_recoveries(config, peaks)  # 2 x 3 MB hold 5 MB


@pytest.mark.parametrize("key, size, message", [("gpu0", "1GB", "runtime.max_memory: 'gpu0' is not allowed"),
                                                ("cpu", "lots", r"runtime.max_memory.cpu: memory size 'lots'")])
def test_bad_memory_limits_are_named(tiny_model_dir, key, size, message):
    with pytest.raises(ConfigError, match=message):
        check_config(full_recovery_config(tiny_model_dir, max_memory={key: size}), ".", REPO)


@pytest.mark.parametrize("spec, whole, every", [("retrain:norms", True, False), ("retrain:norms+full", True, True),
                                                ("recon:full", True, True), ("recon:sublayer", False, False)])
def test_a_recovery_says_whether_it_needs_the_whole_model(spec, whole, every):
    """One place decides it: the recovery job (no dense stream), its float32 model and the memory check."""
    from pruneflow.spec.naming import parse_recovery

    rec = parse_recovery(spec)
    assert (rec.whole_model, rec.trains_every_weight) == (whole, every)
