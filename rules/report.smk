# Tables and figures, one set per study declared in the config.


def study_inputs(w):
    variants = study_variants(w.study)
    ppl = ex.ppl_name(config["perplexity"])
    return {
        "ppl": [f"results/{MODEL}/eval/{v}/{ppl}" for v in variants],
        "sparsity": [f"results/{MODEL}/eval/{v}/sparsity.json" for v in variants],
        "variants": [f"results/{MODEL}/{v}" for v in variants],
    }


rule study_report:
    input:
        unpack(study_inputs),
    output:
        csv="results/tables/{study}.csv",
        md="results/tables/{study}.md",
        tex="results/tables/{study}.tex",
        png="results/figures/{study}.png",
        pdf="results/figures/{study}.pdf",
    params:
        model=MODEL,
        title=lambda w: config["studies"][w.study].get("title", w.study),
        reference=lambda w: config["studies"][w.study].get("reference", ""),
    log:
        "results/logs/report/{study}.log",
    threads: 1
    script:
        "../scripts/report_study.py"
