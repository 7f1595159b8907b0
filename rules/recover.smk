# Recovery after pruning: layer-wise reconstruction (Free Lunch) or PERP retraining, on a pruned variant.


def recovery_params(w):
    rec = next(
        r for s in config["studies"].values() for r in map(ex.parse_recovery, s.get("recoveries", []))
        if r is not None and r.token(ex.recovery_settings(r, config)) == w.recovery
    )
    return as_json({"recovery": rec.__dict__, "settings": ex.recovery_settings(rec, config)})


rule recover:
    input:
        dense="results/{model}/dense",
        pruned="results/{model}/pruned/{pcalib}/{method}",
        calib="results/{model}/calib/{calib}.safetensors",
    output:
        directory("results/{model}/recovered/{pcalib}/{method}/{calib}/{recovery}"),
    wildcard_constraints:
        pcalib=PATH_PART,
        method=PATH_PART,
        recovery=r"(?:recon|retrain)-[^/]+",
    params:
        spec=recovery_params,
    log:
        "results/logs/{model}/recovered/{pcalib}/{method}/{calib}/{recovery}.log",
    benchmark:
        "results/benchmarks/{model}/recovered/{pcalib}/{method}/{calib}/{recovery}.tsv"
    resources:
        mem_mb=recover_mem_mb,
        runtime=RUNTIME_MIN["recover"],
        gpu=GPU,
    threads: 1
    script:
        "../scripts/recover.py"
