# Configuration checks and input functions shared by every rule.
import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the library, also without `pip install -e`

from pruneflow import experiments as ex
from pruneflow.config import ConfigError, cache_grams, validate_config

try:
    validate_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

MODEL = config["model"]
# Jobs that run the model on the device claim it; `--resources gpu=1` (default profile) serialises them.
GPU = 0 if config.get("runtime", {}).get("device", "cpu") == "cpu" else 1


wildcard_constraints:
    model=r"[^/]+",
    corpus=r"[^/]+",
    calib=r"[^/]+",
    variant=r"dense|(?:pruned|structured)/[^/]+/[^/]+|recovered/[^/]+/[^/]+/[^/]+/[^/]+",
    study=r"[^/]+",


def as_json(value):
    """Params are compared as strings: serialise with sorted keys so key order never reruns a job."""
    return json.dumps(value, sort_keys=True)


def variant_dir(wildcards):
    return f"results/{wildcards.model}/{wildcards.variant}"


def variant_parents(wildcards):
    """Folders a compact variant is rebuilt from when loaded (its parent, the parent's parent, ...)."""
    return [f"results/{wildcards.model}/{v}" for v in ex.variant_lineage(wildcards.variant)[1:]]


def study_variants(study):
    return ex.variants_of(config["studies"][study], config)


def all_targets():
    studies = list(config["studies"])
    return expand("results/tables/{study}.csv", study=studies) + expand("results/figures/{study}.png", study=studies)
