# Unstructured and N:M pruning. The sequential stream runs its layer loop inside one job,
# because block l's inputs depend on the pruned blocks before it; it still writes one mask file per block.


def prune_inputs(w):
    inputs = {"model": f"results/{w.model}/dense"}
    if w.calib != "none":
        inputs["calib"] = f"results/{w.model}/calib/{w.calib}.safetensors"
    return inputs


rule prune:
    input:
        unpack(prune_inputs),
    output:
        directory("results/{model}/pruned/{calib}/{method}"),
    log:
        "results/logs/{model}/pruned/{calib}/{method}.log",
    benchmark:
        "results/benchmarks/{model}/pruned/{calib}/{method}.tsv"
    threads: 1
    script:
        "../scripts/prune_model.py"
