# Recovery after pruning: layer-wise reconstruction (Free Lunch) or PERP retraining, on a pruned variant
# (or, order interleaved, pruning and reconstruction block by block from the dense model in one job).


rule recover:
    input:
        unpack(recover_inputs),
    output:
        maybe_temp(
            directory(
                "results/{model}/recovered/{pcalib}/{method}/{calib}/{recovery}"
            ),
            "variants",
        ),
    log:
        "results/logs/{model}/recovered/{pcalib}/{method}/{calib}/{recovery}.log",
    benchmark:
        "results/benchmarks/{model}/recovered/{pcalib}/{method}/{calib}/{recovery}.tsv"
    wildcard_constraints:
        pcalib=PATH_PART,
        method=PATH_PART,
        recovery=ex.recovery_id_pattern(),
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=recover_mem_mb,
        runtime=RUNTIME_MIN["recover"],
        gpu=recover_gpus,
    params:
        spec=recovery_params,
    script:
        "../scripts/recover.py"
