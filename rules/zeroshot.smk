# Zero-shot accuracy through lm-eval: one job per (model variant, task), so a new task adds only its jobs.
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
        task=r"[A-Za-z0-9_]+",
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
