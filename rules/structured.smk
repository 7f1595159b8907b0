# Structured pruning: whole heads (KV groups) and FFN neurons removed, output projections repaired
# (none, bias compensation, LIAR), stored whole as a physically smaller model. Sequential, one job.


rule prune_structured:
    input:
        model="results/{model}/dense",
        calib=calib_input,
    output:
        maybe_temp(
            directory("results/{model}/structured/{calib}/{method}"),
            "variants",
        ),
    log:
        "results/logs/{model}/structured/{calib}/{method}.log",
    benchmark:
        "results/benchmarks/{model}/structured/{calib}/{method}.tsv"
    wildcard_constraints:
        method=PATH_PART,
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=lambda w: mem_mb(
            "prune_structured_liar"
            if pruning_kind(w.method) == "prune_structured_liar"
            else "prune_structured"
        ),
        runtime=RUNTIME_MIN["prune_structured"],
        gpu=GPU,
    script:
        "../scripts/prune_structured.py"


rule speed:
    input:
        model=variant_dir,
        parents=variant_parents,
    output:
        "results/{model}/eval/{variant}/speed-l{seqlen}.json",
    log:
        "results/logs/{model}/eval/{variant}/speed-l{seqlen}.log",
    benchmark:
        "results/benchmarks/{model}/eval/{variant}/speed-l{seqlen}.tsv"
    wildcard_constraints:
        seqlen=r"\d+",
    conda:
        "../envs/pruneflow.yaml"
    threads: every_core()  # no other job runs beside it, so throughputs compare
    resources:
        mem_mb=mem_mb("speed"),
        runtime=RUNTIME_MIN["speed"],
    script:
        "../scripts/eval_speed.py"
