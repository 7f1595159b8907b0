# Tables and figures, one set per study declared in the config.
from pruneflow.preflight import SPEED_SEQLEN


def benchmark_of(artifact):
    """The benchmark file of the job that made ``artifact`` (a path under results/<model>/)."""
    return f"results/benchmarks/{MODEL}/{artifact}.tsv"


def study_costs(study):
    """{variant: {"prune": [benchmark files], "recover": [...]}}: the jobs that made each variant."""
    return {
        v: {column: [benchmark_of(a) for a in artifacts] for column, artifacts in ex.making_steps(v).items()}
        for v in study_variants(study)
    }


def study_inputs(w):
    study = config["studies"][w.study]
    variants = study_variants(w.study)
    ppl = ex.ppl_name(config["perplexity"])
    costs = study_costs(w.study)
    inputs = {
        "ppl": [f"results/{MODEL}/eval/{v}/{ppl}" for v in variants],
        "variants": [f"results/{MODEL}/{v}" for v in variants],  # summary.json, sparsity.json
        "benchmarks": sorted({f for c in costs.values() for files in c.values() for f in files}),
    }
    if study.get("kind") == "sensitivity":
        artifacts = ex.sensitivity_artifacts(study, config)
        inputs["sensitivity"] = [f"results/{MODEL}/{a}" for a in artifacts]
        inputs["sensitivity_benchmarks"] = [benchmark_of(a.removesuffix(".json")) for a in artifacts]
    if study.get("kind") == "structured" and study.get("speed"):
        inputs["speed"] = [f"results/{MODEL}/eval/{v}/speed-l{SPEED_SEQLEN}.json" for v in variants]
    if study.get("kind") != "structured" and CLAIMS_BANDS is not None and CLAIMS_BANDS.is_file():
        inputs["bands"] = [str(CLAIMS_BANDS)]  # the measured noise bands: a column of the table
    if study.get("zeroshot"):
        tasks = config["zeroshot"]["tasks"]
        inputs["zeroshot"] = [f"results/{MODEL}/eval/{v}/{zeroshot_name(t)}" for v in variants for t in tasks]
    return inputs


rule study_report:
    input:
        unpack(study_inputs),
    output:
        csv=report("results/tables/{study}.csv", caption="captions/table.rst", category="Tables"),
        md="results/tables/{study}.md",
        tex="results/tables/{study}.tex",
        png=report("results/figures/{study}.png", caption="captions/figure.rst", category="Figures"),
        pdf="results/figures/{study}.pdf",
    params:
        model=MODEL,
        title=lambda w: config["studies"][w.study].get("title", w.study),
        reference=lambda w: config["studies"][w.study].get("reference", ""),
        kind=lambda w: config["studies"][w.study].get("kind", "unstructured"),
        costs=lambda w: as_json(study_costs(w.study)),
    log:
        "results/logs/report/{study}.log",
    benchmark:
        "results/benchmarks/report/{study}.tsv"
    threads: 1
    script:
        "../scripts/report_study.py"


# ---------------------------------------------------------------- the claims ledger
# Reruns only when a table, claims.yaml or the measured noise bands change (they are its only inputs).


def claims_inputs(_w):
    inputs = {"claims": CLAIMS_FILE, "tables": expand("results/tables/{study}.csv", study=list(config["studies"]))}
    if CLAIMS_BANDS is not None and CLAIMS_BANDS.is_file():
        inputs["bands"] = [str(CLAIMS_BANDS)]
    return inputs


rule claims:
    input:
        unpack(claims_inputs),
    output:
        csv=report("results/tables/claims.csv", caption="captions/claims.rst", category="Claims"),
        md="results/tables/claims.md",
    log:
        "results/logs/report/claims.log",
    benchmark:
        "results/benchmarks/report/claims.tsv"
    resources:
        mem_mb=mem_mb("claims"),
        runtime=RUNTIME_MIN["claims"],
    threads: 1
    script:
        "../scripts/claims_ledger.py"
