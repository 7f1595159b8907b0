# Tables and figures, one set per study declared in the config.
from pruneflow.spec.preflight import SPEED_SEQLEN


rule study_report:
    input:
        unpack(study_inputs),
    output:
        csv=report(
            "results/tables/{study}.csv",
            caption="captions/table.rst",
            category="Tables",
        ),
        md="results/tables/{study}.md",
        tex="results/tables/{study}.tex",
        png=report(
            "results/figures/{study}.png",
            caption="captions/figure.rst",
            category="Figures",
        ),
        pdf="results/figures/{study}.pdf",
    log:
        "results/logs/report/{study}.log",
    benchmark:
        "results/benchmarks/report/{study}.tsv"
    wildcard_constraints:
        study=STUDY_NAMES,  # not claims.csv, not figures/blocks/...
    conda:
        "../envs/pruneflow.yaml"
    threads: 1
    params:
        model=MODEL,
        title=lambda w: config["studies"][w.study].get("title", w.study),
        reference=lambda w: config["studies"][w.study].get("reference", ""),
        kind=lambda w: config["studies"][w.study].get("kind", "unstructured"),
        costs=lambda w: as_json(study_costs(w.study)),
        zeroshot_metric=lambda w: as_json(config.get("zeroshot", {}).get("metric", {})),
    script:
        "../scripts/report_study.py"


# ---------------------------------------------------------------- the claims ledger
# Reruns only when a table, claims.yaml or the measured noise bands change (they are its only inputs).


rule claims:
    input:
        unpack(claims_inputs),
    output:
        csv=report(
            "results/tables/claims.csv",
            caption="captions/claims.rst",
            category="Claims",
        ),
        md="results/tables/claims.md",
    log:
        "results/logs/report/claims.log",
    benchmark:
        "results/benchmarks/report/claims.tsv"
    conda:
        "../envs/pruneflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("claims"),
        runtime=RUNTIME_MIN["claims"],
    script:
        "../scripts/claims_ledger.py"
