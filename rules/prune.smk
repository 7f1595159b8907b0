# Unstructured and N:M pruning, by two routes:
# - sequential stream (method id ends in -seq): the layer loop runs inside one job, because block l's
#   inputs depend on the pruned blocks before it; it still writes one mask file per block.
# - dense stream and calibration-free criteria: one activation cache shared by every variant; a
#   variant is one job (scores -> masks -> the dense model + masks), so a new sparsity or pattern
#   recomputes only that variant. Scores are not stored: they are a cheap function of the dense
#   weights and the cache, and as large as the model in float32. A solver (SparseGPT) on the dense
#   stream prunes and updates each block from the cache's Gram matrices (prune_from_cache).
# A variant is stored as its parent + bit-packed masks + what changed (pruneflow.core.variants).
# Which rule makes a method id is read from the registry (criteria, solvers, allocations, refinements by
# name; spec/registry.py). A method with an allocation (e.g. -owl-m<M>-l<lambda>) also reads its per-block
# sparsities, an allocation artifact (rules/allocation.smk); uniform methods read none.
SEQUENTIAL_ID = ex.method_id_regex(streams="seq")
SCORE_ID = ex.method_id_regex(("criterion",), streams="dense|")
SOLVER_ID = ex.method_id_regex(("solver",), streams="dense")


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
        method=SEQUENTIAL_ID,
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=lambda w: mem_mb(pruning_kind(w.method), f"pruned/{w.calib}/{w.method}"),
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
        contents=cache_contents(config),  # Gram matrices, channel sums: a changed value reruns the cache
    script:
        "../scripts/build_activation_cache.py"


rule prune_by_score:
    input:
        model="results/{model}/dense",
        cache=method_cache,
        allocation=allocation_input(lambda w: w.method),
    output:
        directory("results/{model}/pruned/{calib}/{method}"),
    log:
        "results/logs/{model}/pruned/{calib}/{method}.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/{method}.tsv"
    wildcard_constraints:
        method=SCORE_ID,
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=lambda w: mem_mb("prune_by_score", f"pruned/{w.calib}/{w.method}"),
        runtime=RUNTIME_MIN["prune_by_score"],
    script:
        "../scripts/prune_by_score.py"


rule prune_from_cache:
    input:
        model="results/{model}/dense",
        cache="results/{model}/acts/{calib}",
        allocation=allocation_input(lambda w: w.method),
    output:
        directory("results/{model}/pruned/{calib}/{method}"),
    log:
        "results/logs/{model}/pruned/{calib}/{method}.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/{method}.tsv"
    wildcard_constraints:
        method=SOLVER_ID,
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=lambda w: mem_mb("prune_from_cache", f"pruned/{w.calib}/{w.method}"),
        runtime=RUNTIME_MIN["prune_from_cache"],
        gpu=GPU,
    script:
        "../scripts/prune_from_cache.py"
