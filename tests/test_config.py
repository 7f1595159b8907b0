import copy

import pytest
import yaml

from pruneflow.config import ConfigError, validate_config

from conftest import REPO


@pytest.fixture()
def default_config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid(default_config):
    validate_config(default_config)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["studies"]["sparsity_sweep"]["patterns"].append(1.5),
         r"studies\.sparsity_sweep\.patterns\[4\]: 1\.5 is not allowed: .*\[0, 1\)"),
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
    config = copy.deepcopy(default_config)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_extended_config_merges_into_the_default(default_config):
    """config/extended.yaml only adds studies (snakemake merges --configfile into config.yaml)."""
    from pruneflow.experiments import variants_of

    extra = yaml.safe_load((REPO / "config" / "extended.yaml").read_text())
    merged = copy.deepcopy(default_config)
    merged["studies"].update(extra["studies"])
    validate_config(merged)
    variants = variants_of(merged["studies"]["recon_sweep"], merged)
    assert len(variants) == 1 + 2 * 3 * 2  # dense + (wanda, sparsegpt) x 3 sparsities x (none, sublayer)
    assert set(extra) == {"studies"} and not set(extra["studies"]) & set(default_config["studies"])


def test_bfloat16_config_merges_and_selects_a_bfloat16_model(default_config):
    extra = yaml.safe_load((REPO / "config" / "bfloat16.yaml").read_text())
    merged = copy.deepcopy(default_config)
    merged["model"] = extra["model"]
    merged["models"].update(extra["models"])
    validate_config(merged)
    assert merged["models"][merged["model"]]["dtype"] == "bfloat16"
    assert merged["model"] != default_config["model"]  # its results live beside the float32 ones
