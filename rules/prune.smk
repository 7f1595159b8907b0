# Unstructured and N:M pruning, by two routes:
# - sequential stream (method id ends in -seq): the layer loop runs inside one job, because block l's
#   inputs depend on the pruned blocks before it; it still writes one mask file per block.
# - dense stream and calibration-free criteria: one activation cache shared by every variant; a
#   variant is one job (scores -> masks -> the dense model + masks), so a new sparsity or pattern
#   recomputes only that variant. Scores are not stored: they are a cheap function of the dense
#   weights and the cache, and as large as the model in float32.
# A variant is stored as its parent + bit-packed masks + what changed (pruneflow.core.variants).
# An OWL method (id with -owl-m<M>-l<lambda>) also reads its per-block sparsities, an allocation
# artifact made from the activation cache (rules/allocation.smk); uniform methods read none.
from pruneflow.spec.criteria import CRITERIA

SCORE_CRITERIA = "|".join(n for n in CRITERIA if n != "sparsegpt")
PATTERN = r"(?:u[0-9.]+|\d+of\d+)"
ALLOC = r"-owl-m[0-9.]+-l[0-9.]+"


rule prune_sequential:
    input:
        model="results/{model}/dense",
        calib=calib_input,
        allocation=allocation_input(lambda w: w.method),
    output:
        directory("results/{model}/pruned/{calib}/{method}"),
    log:
        "results/logs/{model}/pruned/{calib}/{method}.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/{method}.tsv"
    wildcard_constraints:
        method=rf"[a-z_]+-{PATTERN}(?:{ALLOC})?-seq",
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=lambda w: mem_mb(pruning_kind(w.method)),
        runtime=RUNTIME_MIN["prune_sequential"],
        gpu=GPU,
    script:
        "../scripts/prune_sequential.py"


rule activation_cache:
    input:
        model="results/{model}/dense",
        calib="results/{model}/calib/{calib}.safetensors",
    output:
        maybe_temp(directory("results/{model}/acts/{calib}")),
    log:
        "results/logs/{model}/acts/{calib}.log",
    benchmark:
        "results/benchmarks/{model}/acts/{calib}.tsv"
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("activation_cache"),
        runtime=RUNTIME_MIN["activation_cache"],
        gpu=GPU,
    params:
        gram=cache_grams(config),  # a changed setting reruns the cache (params trigger)
    script:
        "../scripts/build_activation_cache.py"


rule prune_by_score:
    input:
        model="results/{model}/dense",
        # magnitude reads no cache (with OWL its calibration shows in the allocation it reads)
        cache=lambda w: (
            f"results/{w.model}/acts/{w.calib}"
            if CRITERIA[w.criterion].needs_calibration
            else []
        ),
        allocation=allocation_input(
            lambda w: f"{w.criterion}-{w.pattern}{w.alloc}{w.stream}"
        ),
    output:
        directory("results/{model}/pruned/{calib}/{criterion}-{pattern}{alloc}{stream}"),
    log:
        "results/logs/{model}/pruned/{calib}/{criterion}-{pattern}{alloc}{stream}.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/{criterion}-{pattern}{alloc}{stream}.tsv"
    wildcard_constraints:
        criterion=SCORE_CRITERIA,
        pattern=PATTERN,
        alloc=f"|{ALLOC}",
        stream=r"|-dense",
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("prune_by_score"),
        runtime=RUNTIME_MIN["prune_by_score"],
    script:
        "../scripts/prune_by_score.py"


rule prune_from_cache:
    input:
        model="results/{model}/dense",
        cache="results/{model}/acts/{calib}",
        allocation=allocation_input(lambda w: f"sparsegpt-{w.pattern}{w.alloc}-dense"),
    output:
        directory("results/{model}/pruned/{calib}/sparsegpt-{pattern}{alloc}-dense"),
    log:
        "results/logs/{model}/pruned/{calib}/sparsegpt-{pattern}{alloc}-dense.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/sparsegpt-{pattern}{alloc}-dense.tsv"
    wildcard_constraints:
        pattern=PATTERN,
        alloc=f"|{ALLOC}",
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("prune_from_cache"),
        runtime=RUNTIME_MIN["prune_from_cache"],
        gpu=GPU,
    script:
        "../scripts/prune_from_cache.py"
