# Zero-shot accuracy through lm-eval: one job per (model variant, task), so a new task adds only its jobs.
from pruneflow.zeroshot_names import LOCAL_TASKS


def zeroshot_name(task):
    zs = config["zeroshot"]
    return f"zeroshot-{task}-n{zs['items']}-s{zs.get('seed', 0)}.json"


rule zeroshot_task:
    output:
        directory("results/zeroshot/tasks/{task}-n{nitems}-s{seed}"),
    wildcard_constraints:
        task="|".join(LOCAL_TASKS),
        nitems=r"\d+",
        seed=r"\d+",
    log:
        "results/logs/zeroshot/tasks/{task}-n{nitems}-s{seed}.log",
    benchmark:
        "results/benchmarks/zeroshot/tasks/{task}-n{nitems}-s{seed}.tsv"
    threads: 1
    script:
        "../scripts/build_zeroshot_task.py"


def zeroshot_inputs(w):
    inputs = {"model": variant_dir(w), "parents": variant_parents(w)}
    if w.task in LOCAL_TASKS:
        inputs["task"] = f"results/zeroshot/tasks/{w.task}-n{w.nitems}-s{w.seed}"
    return inputs


rule zeroshot:
    input:
        unpack(zeroshot_inputs),
    output:
        "results/{model}/eval/{variant}/zeroshot-{task}-n{nitems}-s{seed}.json",
    wildcard_constraints:
        task=r"[A-Za-z0-9_]+",
        nitems=r"\d+",
        seed=r"\d+",
    log:
        "results/logs/{model}/eval/{variant}/zeroshot-{task}-n{nitems}-s{seed}.log",
    benchmark:
        "results/benchmarks/{model}/eval/{variant}/zeroshot-{task}-n{nitems}-s{seed}.tsv"
    resources:
        mem_mb=mem_mb("zeroshot"),
        runtime=RUNTIME_MIN["zeroshot"],
        gpu=GPU,
    threads: 1
    script:
        "../scripts/eval_zeroshot.py"
