# Unstructured and N:M pruning, by two routes:
# - sequential stream (method id ends in -seq): the layer loop runs inside one job, because block l's
#   inputs depend on the pruned blocks before it; it still writes one mask file per block.
# - dense stream and calibration-free criteria: activation cache -> scores -> masks -> pruned model,
#   each an artifact, so a new sparsity or pattern recomputes only masks and below.
from pruneflow.registry import CRITERIA

SCORE_CRITERIA = "|".join(n for n in CRITERIA if n != "sparsegpt")
PATTERN = r"(?:u[0-9.]+|\d+of\d+)"


def maybe_temp(path):
    return temp(path) if config.get("activations", {}).get("temporary", False) else path


def calib_input(w):
    return [] if w.calib == "none" else f"results/{w.model}/calib/{w.calib}.safetensors"


rule prune_sequential:
    input:
        model="results/{model}/dense",
        calib=calib_input,
    output:
        directory("results/{model}/pruned/{calib}/{method}"),
    wildcard_constraints:
        method=r"[a-z_]+-" + PATTERN + "-seq",
    log:
        "results/logs/{model}/pruned/{calib}/{method}.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/{method}.tsv"
    resources:
        mem_mb=mem_mb("prune_sequential"),
        runtime=RUNTIME_MIN["prune_sequential"],
        gpu=GPU,
    threads: 1
    script:
        "../scripts/prune_sequential.py"


rule activation_cache:
    input:
        model="results/{model}/dense",
        calib="results/{model}/calib/{calib}.safetensors",
    output:
        maybe_temp(directory("results/{model}/acts/{calib}")),
    params:
        gram=cache_grams(config),  # a changed setting reruns the cache (params trigger)
    log:
        "results/logs/{model}/acts/{calib}.log",
    benchmark:
        "results/benchmarks/{model}/acts/{calib}.tsv"
    resources:
        mem_mb=mem_mb("activation_cache"),
        runtime=RUNTIME_MIN["activation_cache"],
        gpu=GPU,
    threads: 1
    script:
        "../scripts/build_activation_cache.py"


rule scores:
    input:
        model="results/{model}/dense",
        cache=lambda w: [] if w.calib == "none" else f"results/{w.model}/acts/{w.calib}",
    output:
        maybe_temp(directory("results/{model}/scores/{calib}/{criterion}")),
    wildcard_constraints:
        criterion=SCORE_CRITERIA,
    log:
        "results/logs/{model}/scores/{calib}/{criterion}.log",
    benchmark:
        "results/benchmarks/{model}/scores/{calib}/{criterion}.tsv"
    resources:
        mem_mb=mem_mb("scores"),
        runtime=RUNTIME_MIN["scores"],
    threads: 1
    script:
        "../scripts/score_weights.py"


rule masks:
    input:
        "results/{model}/scores/{calib}/{criterion}",
    output:
        directory("results/{model}/masks/{calib}/{criterion}-{pattern}"),
    wildcard_constraints:
        criterion=SCORE_CRITERIA,
        pattern=PATTERN,
    log:
        "results/logs/{model}/masks/{calib}/{criterion}-{pattern}.log",
    resources:
        mem_mb=mem_mb("masks"),
        runtime=RUNTIME_MIN["masks"],
    threads: 1
    script:
        "../scripts/make_masks.py"


rule apply_masks:
    input:
        model="results/{model}/dense",
        masks="results/{model}/masks/{calib}/{criterion}-{pattern}",
    output:
        directory("results/{model}/pruned/{calib}/{criterion}-{pattern}{stream}"),
    wildcard_constraints:
        criterion=SCORE_CRITERIA,
        pattern=PATTERN,
        stream=r"|-dense",
    log:
        "results/logs/{model}/pruned/{calib}/{criterion}-{pattern}{stream}.log",
    resources:
        mem_mb=mem_mb("apply_masks"),
        runtime=RUNTIME_MIN["apply_masks"],
    threads: 1
    script:
        "../scripts/apply_masks.py"


rule prune_from_cache:
    input:
        model="results/{model}/dense",
        cache="results/{model}/acts/{calib}",
    output:
        directory("results/{model}/pruned/{calib}/sparsegpt-{pattern}-dense"),
    wildcard_constraints:
        pattern=PATTERN,
    log:
        "results/logs/{model}/pruned/{calib}/sparsegpt-{pattern}-dense.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/sparsegpt-{pattern}-dense.tsv"
    resources:
        mem_mb=mem_mb("prune_from_cache"),
        runtime=RUNTIME_MIN["prune_from_cache"],
        gpu=GPU,
    threads: 1
    script:
        "../scripts/prune_from_cache.py"
