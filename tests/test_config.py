import copy

import pytest
import yaml

from conftest import REPO
from pruneflow.spec.config import ConfigError, validate_config, with_defaults


@pytest.fixture()
def default_config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid(default_config):
    validate_config(default_config)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["studies"]["sparsity_sweep"]["patterns"].insert(0, 1.5),
         r"studies\.sparsity_sweep\.patterns\[0\]: 1\.5 is not allowed: .*\[0, 1\)"),
        (lambda c: c["studies"]["sparsity_sweep"]["criteria"].append("optimal_brain"),
         r"studies\.sparsity_sweep\.criteria\[2\]: 'optimal_brain' is not allowed; allowed: magnitude, .*wanda"),
        (lambda c: c["models"].update({"mine": {"source": "local", "path": "/no/such/folder"}}),
         r"models\.mine\.path: '/no/such/folder' is not a Hugging Face model folder"),
        (lambda c: c["studies"]["sparsity_sweep"].update({"patterns": ["3:2"]}),
         r"patterns\[0\]: '3:2' is not allowed: .*0 < N < M"),
        (lambda c: c.update({"model": "gpt5"}), r"model: 'gpt5' is not defined; allowed: smollm2-135m"),
        (lambda c: c["runtime"].update({"device": "tpu"}), r"runtime\.device: 'tpu' is not allowed; allowed: cpu, cuda, auto"),
        (lambda c: c["calibration"].update({"nsamples": 0}), r"calibration\.nsamples: 0 is not allowed"),
        (lambda c: c["models"]["smollm2-135m"].update({"dtype": "fp8"}),
         r"models\.smollm2-135m\.dtype: 'fp8' is not allowed; allowed: float32, bfloat16, float16"),
        (lambda c: c.update({"sparsity": 0.5}), r"\(top level\): .*'sparsity'.*allowed keys: "),
        (lambda c: (c["activations"].update(gram=False), c["studies"]["sparsity_sweep"]["criteria"].append("sparsegpt")),
         r"studies\.sparsity_sweep: sparsegpt on the dense stream needs .*activations\.gram is false; allowed: "),
    ],
)
def test_bad_values_name_key_value_and_allowed(default_config, edit, message):
    _assert_rejected(default_config, edit, message)


def _assert_rejected(default_config, edit, message):
    config = copy.deepcopy(default_config)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_extended_config_merges_into_the_default(default_config):
    """config/extended.yaml adds studies, extends four default ones and adds a zero-shot task (snakemake merges
    --configfile into config.yaml key by key): every row and task of the default stays, and each extended study
    adds rows or a setting."""
    from snakemake.utils import update_config

    from pruneflow.spec.naming import variants_of

    extra = yaml.safe_load((REPO / "config" / "extended.yaml").read_text())
    merged = copy.deepcopy(default_config)
    update_config(merged, extra)
    validate_config(merged)
    variants = variants_of(merged["studies"]["recon_sweep"], merged)
    assert len(variants) == 1 + 2 * 3 * 2  # dense + (wanda, sparsegpt) x 3 sparsities x (none, sublayer)
    assert set(extra) == {"studies", "zeroshot"}  # zeroshot: the default's tasks and one more
    assert set(default_config["zeroshot"]["tasks"]) < set(merged["zeroshot"]["tasks"])
    for name in set(extra["studies"]) & set(default_config["studies"]):
        before, after = variants_of(default_config["studies"][name], default_config), variants_of(merged["studies"][name], merged)
        assert set(before) <= set(after), name
        assert set(before) < set(after) or merged["studies"][name] != default_config["studies"][name], name
    assert merged["studies"]["liar_table"]["speed"] and not default_config["studies"]["liar_table"].get("speed")


@pytest.mark.parametrize("name, dtype", [("bfloat16", "bfloat16"), ("float64", "float64")])
def test_dtype_config_merges_and_selects_a_model_of_its_dtype(default_config, name, dtype):
    extra = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    merged = copy.deepcopy(default_config)
    merged["model"] = extra["model"]
    merged["models"].update(extra["models"])
    validate_config(merged)
    assert merged["models"][merged["model"]]["dtype"] == dtype
    assert merged["model"] != default_config["model"]  # its results live beside the float32 ones


def _owl(**keys):
    return lambda c: c["studies"].update(owl={"criteria": ["wanda"], "patterns": [0.5, 0.7], "allocation": "owl", **keys})


@pytest.mark.parametrize(
    "edit, message",
    [
        (_owl(allocation="tiered"), r"studies\.owl\.allocation: 'tiered' is not allowed; allowed: uniform, owl"),
        (_owl(allocation=["uniform", "OWL"]), r"studies\.owl\.allocation\[1\]: 'OWL' is not allowed; allowed: uniform, owl"),
        (_owl(allocation=[]), r"studies\.owl\.allocation: \[\] is not allowed"),
        (_owl(allocation="uniform", owl_lambda=0.1),
         r"studies\.owl\.owl_lambda: belongs to allocation owl, but this study's allocation is uniform .*allowed: allocation: owl"),
        (_owl(patterns=[0.5, "2:4"]), r"studies\.owl\.patterns\[1\]: '2:4' is not allowed with allocation owl: .*N:M prunes every block alike"),
        (_owl(patterns=[0.0]), r"studies\.owl\.patterns\[0\]: 0\.0 is not allowed with allocation owl"),
        (_owl(owl_lambda=0.2), r"studies\.owl\.owl_lambda: 0\.2 is not allowed at sparsity 0\.7 \(studies\.owl\.patterns\[1\]\).*allowed: 0 <= lambda < 0\.15"),
        (_owl(owl_lambda=[0.05, -0.1]), r"studies\.owl\.owl_lambda\[1\]: -0\.1 is not allowed; allowed: a number >= 0"),
        (_owl(owl_m=0), r"studies\.owl\.owl_m: 0 is not allowed; allowed: a number > 0"),
        (_owl(owl_m=True), r"studies\.owl\.owl_m: True is not allowed"),
        (_owl(owl_lambda=0.0812345678), r"studies\.owl\.owl_lambda: 0\.0812345678 cannot be spelled exactly in an artifact path"),
        (_owl(owl_m="five"), r"studies\.owl\.owl_m: 'five' is not allowed: 'five' is not of type 'number', 'array'"),
        (lambda c: c["studies"].update(s={"kind": "structured", "criteria": ["wanda"], "ratios": [0.2], "reconstructions": ["none"],
                                         "allocation": "owl"}), r"studies\.s: 'allocation' does not belong to a structured study"),
        (lambda c: c["studies"].update(s={"kind": "sensitivity", "criteria": ["wanda"], "patterns": [0.7], "windows": 9}),
         r"studies\.s\.windows: 9 is not allowed: .*perplexity\.windows = 4; allowed: 1 to 4"),
        (lambda c: c["studies"].update(s={"kind": "sensitivity", "criteria": ["sparsegpt"], "patterns": [0.7]}),
         r"studies\.s: sparsegpt prunes each block from the dense-stream cache's Gram matrices, but activations\.gram is false"),
        (lambda c: c["studies"].update(s={"kind": "sensitivity", "criteria": ["wanda"], "patterns": [0.7], "stream": "dense"}),
         r"studies\.s: 'stream' does not belong to a sensitivity study"),
        # hyperparameters where a study names a method (the registry's schemas)
        (_owl(criteria=["wanda", {"name": "ria", "a": 5}]),
         r"studies\.owl\.criteria\[1\]: criterion 'ria': a = 5\.0 is not allowed; allowed: a number >= 0 and <= 2$"),
        (_owl(criteria=[{"name": "sparsegpt", "damp": 0.1}]),
         r"studies\.owl\.criteria\[0\]: solver 'sparsegpt': unknown parameter 'damp'; allowed: blocksize, percdamp$"),
        (_owl(criteria=[{"a": 0.3}]), r"studies\.owl\.criteria\[0\]: \{'a': 0\.3\} names no method"),
        (_owl(allocation={"name": "owl", "lam": 0.2}),
         r"studies\.owl\.allocation: 0\.2 is not allowed at sparsity 0\.7 \(studies\.owl\.patterns\[1\]\).*allowed: 0 <= lambda < 0\.15"),
        (_owl(refinements=["dsnot_typo"]), r"studies\.owl\.refinements\[0\]: 'dsnot_typo' is not allowed; allowed: none"),
    ],
)
def test_bad_allocation_and_sensitivity_values_name_key_value_and_allowed(default_config, edit, message):
    _assert_rejected(default_config, edit, message)


def test_good_allocation_spellings_validate(default_config):
    config = copy.deepcopy(default_config)
    config["studies"]["a"] = {"criteria": ["wanda", "sparsegpt", "magnitude"], "patterns": [0.5, 0.7], "allocation": ["uniform", "owl"],
                              "owl_m": [3, 7], "owl_lambda": [0.02, 0.1]}
    config["studies"]["b"] = {"kind": "recovery", "criteria": ["wanda"], "patterns": [0.7], "allocation": "owl",
                              "recoveries": ["none", "recon:sublayer"]}
    config["studies"]["c"] = {"kind": "sensitivity", "criteria": ["wanda", "magnitude"], "patterns": [0.7, "2:4"], "windows": 2}
    config["studies"]["d"] = {"criteria": [{"name": "ria", "a": 0.25}, {"name": "sparsegpt", "blocksize": 64}], "patterns": [0.7],
                              "allocation": ["uniform", {"name": "owl", "m": 3, "lam": 0.05}]}
    validate_config(config)


def test_left_out_keys_take_the_schema_defaults(default_config):
    """Sections and keys a config leaves out are filled from the schema's defaults (not from scattered code);
    the config itself is not changed, and reconstruction/retraining get none (their names hash what is spelt)."""
    config = copy.deepcopy(default_config)
    for section in ("runtime", "activations", "variants"):
        del config[section]
    del config["perplexity"]["bos"], config["zeroshot"]["seed"]
    config["reconstruction"] = {}
    filled = with_defaults(config)
    assert filled["runtime"] == {"device": "cpu", "batch_size": 8, "eval_batch_size": 4, "threads": 1, "gpus": 1, "max_memory": {}, "zeroshot_blocks": "auto",
                                 "gradient_checkpointing": False}
    assert filled["activations"] == {"temporary": False, "gram": True}
    assert filled["variants"] == {"temporary": False}
    assert filled["perplexity"]["bos"] == "auto" and filled["zeroshot"]["seed"] == 0
    assert filled["reconstruction"] == {} and "runtime" not in config
    validate_config(filled)
    assert with_defaults(default_config) == default_config  # config.yaml spells every default out


def test_eval_batch_size_is_a_number_or_auto_and_perplexity_reads_auto_as_four(default_config):
    from pruneflow.spec.config import window_batch_size

    for value in ("auto", 16):
        config = copy.deepcopy(default_config)
        config["runtime"]["eval_batch_size"] = value
        validate_config(config)
    config["runtime"]["eval_batch_size"] = "max"
    with pytest.raises(ConfigError, match="runtime.eval_batch_size"):
        validate_config(config)
    assert [window_batch_size({"eval_batch_size": v}) for v in ("auto", 16)] == [4, 16]
    assert window_batch_size({}) == with_defaults(default_config)["runtime"]["eval_batch_size"] == 4


def test_the_cache_stores_channel_sums_only_for_a_dense_stream_method_reading_channel_means(default_config):
    from pruneflow.spec.config import cache_channel_sums

    assert not cache_channel_sums(default_config)  # the default's cache keeps its bytes
    study = {"criteria": ["wanda"], "patterns": [0.7], "stream": "sequential", "refinements": ["none", "dsnot"]}
    config = {**default_config, "studies": {**default_config["studies"], "dsnot": study}}
    validate_config(config)
    assert not cache_channel_sums(config)  # the sequential stream collects its own statistics
    config["studies"]["dsnot"] = {**study, "stream": "dense"}
    validate_config(config)
    assert cache_channel_sums(config)
