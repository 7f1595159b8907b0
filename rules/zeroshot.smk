# Zero-shot accuracy through lm-eval: one job per (model variant, task), so a new task adds only its jobs. A local
# task's result names its items and seed; an lm-eval task's (or group's, or tag's), the items scored: every item
# (all) or the first N (limit<N>, marked limited in its result, the table and the claims ledger).
from pruneflow.spec.zeroshot import LOCAL_TASKS


rule zeroshot_task:
    output:
        directory("results/zeroshot/tasks/{task}-n{nitems}-s{seed}"),
    log:
        "results/logs/zeroshot/tasks/{task}-n{nitems}-s{seed}.log",
    benchmark:
        "results/benchmarks/zeroshot/tasks/{task}-n{nitems}-s{seed}.tsv"
    wildcard_constraints:
        task="|".join(LOCAL_TASKS),
        nitems=r"\d+",
        seed=r"\d+",
    conda:
        "../envs/pruneflow.yaml"
    threads: 1
    params:
        sources=source_checksums(
            task_sources,
            lambda w: f"results/zeroshot/tasks/{w.task}-n{w.nitems}-s{w.seed}",
        ),
    script:
        "../scripts/build_zeroshot_task.py"


rule zeroshot:
    input:
        unpack(zeroshot_inputs),
    output:
        "results/{model}/eval/{variant}/zeroshot-{task}-n{nitems}-s{seed}.json",
    log:
        "results/logs/{model}/eval/{variant}/zeroshot-{task}-n{nitems}-s{seed}.log",
    benchmark:
        "results/benchmarks/{model}/eval/{variant}/zeroshot-{task}-n{nitems}-s{seed}.tsv"
    wildcard_constraints:
        task="|".join(LOCAL_TASKS),
        nitems=r"\d+",
        seed=r"\d+",
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("zeroshot"),
        runtime=RUNTIME_MIN["zeroshot"],
        gpu=GPU,
    script:
        "../scripts/eval_zeroshot.py"


use rule zeroshot as zeroshot_standard with:
    output:
        "results/{model}/eval/{variant}/zeroshot-{task}-{scope}.json",
    log:
        "results/logs/{model}/eval/{variant}/zeroshot-{task}-{scope}.log",
    benchmark:
        "results/benchmarks/{model}/eval/{variant}/zeroshot-{task}-{scope}.tsv"
    wildcard_constraints:
        task=r"(?!(?:%s)-)[A-Za-z0-9_]+" % "|".join(LOCAL_TASKS),
        scope=r"all|limit\d+",
