# Recovery after pruning: layer-wise reconstruction (Free Lunch) or PERP retraining, on a pruned variant
# (or, order interleaved, pruning and reconstruction block by block from the dense model in one job).


def recovery_params(w):
    rec = next(
        r for s in config["studies"].values() for r in map(ex.parse_recovery, s.get("recoveries", []))
        if r is not None and r.token(ex.recovery_settings(r, config)) == w.recovery
    )
    return as_json({"recovery": rec.__dict__, "settings": ex.recovery_settings(rec, config)})


def recover_inputs(w):
    """The dense model and the calibration samples; the pruned variant unless the recovery prunes as it
    goes (order interleaved: block by block from the dense model, its masks its own)."""
    inputs = {"dense": f"results/{w.model}/dense", "calib": f"results/{w.model}/calib/{w.calib}.safetensors"}
    if not ex.is_interleaved(f"recovered/{w.pcalib}/{w.method}/{w.calib}/{w.recovery}"):
        inputs["pruned"] = f"results/{w.model}/pruned/{w.pcalib}/{w.method}"
    return inputs


rule recover:
    input:
        unpack(recover_inputs),
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
