# Per-block sparsity: OWL's allocation (an artifact between the activation cache and the masks, so a
# changed lambda reruns the allocation, the masks and below, never the cache), the figure of the
# measured per-block sparsity of a study's variants, and the optional per-block sensitivity study.


rule allocation:
    input:
        model="results/{model}/dense",
        cache="results/{model}/acts/{calib}",
    output:
        directory("results/{model}/allocation/{calib}/{allocation}"),
    wildcard_constraints:
        allocation=r"owl-m[0-9.]+-l[0-9.]+-u[0-9.]+",
    log:
        "results/logs/{model}/allocation/{calib}/{allocation}.log",
    benchmark:
        "results/benchmarks/{model}/allocation/{calib}/{allocation}.tsv"
    resources:
        mem_mb=mem_mb("allocation"),
        runtime=RUNTIME_MIN["allocation"],
    threads: 1
    script:
        "../scripts/compute_allocation.py"


def block_figure_inputs(w):
    """The pruned variants behind a study's rows (a recovered variant keeps its parent's masks) and the
    allocations of its OWL methods."""
    calib = ex.calib_id(config["calibration"])
    pruned = [next(p for p in ex.variant_lineage(v) if p.startswith("pruned/")) for v in study_variants(w.study) if v != "dense"]
    allocations = [a for m in ex.study_methods(config["studies"][w.study]) if (a := ex.allocation_artifact(m, calib))]
    return {
        "variants": [f"results/{MODEL}/{v}" for v in dict.fromkeys(pruned)],
        "allocations": [f"results/{MODEL}/{a}" for a in dict.fromkeys(allocations)],
    }


rule block_sparsity_figure:
    input:
        unpack(block_figure_inputs),
    output:
        png=report("results/figures/blocks/{study}.png", caption="captions/blocks.rst", category="Figures"),
        pdf="results/figures/blocks/{study}.pdf",
    params:
        model=MODEL,
        title=lambda w: config["studies"][w.study].get("title", w.study),
    log:
        "results/logs/report/blocks/{study}.log",
    benchmark:
        "results/benchmarks/report/blocks/{study}.tsv"
    threads: 1
    script:
        "../scripts/plot_block_sparsity.py"


rule sensitivity:
    input:
        model="results/{model}/dense",
        cache=lambda w: f"results/{w.model}/acts/{w.calib}" if CRITERIA[w.criterion].needs_calibration else [],
        docs="results/corpora/{corpus}/eval.jsonl",
    output:
        "results/{model}/sensitivity/{calib}/{criterion}-{pattern}/ppl-{corpus}-l{seqlen}-w{windows}-bos{bos}.json",
    wildcard_constraints:
        criterion="|".join(CRITERIA),
        pattern=PATTERN,
        seqlen=r"\d+",
        windows=r"\d+",
        bos=r"auto|true|false",
    log:
        "results/logs/{model}/sensitivity/{calib}/{criterion}-{pattern}/ppl-{corpus}-l{seqlen}-w{windows}-bos{bos}.log",
    benchmark:
        "results/benchmarks/{model}/sensitivity/{calib}/{criterion}-{pattern}/ppl-{corpus}-l{seqlen}-w{windows}-bos{bos}.tsv"
    resources:
        mem_mb=mem_mb("sensitivity"),
        runtime=RUNTIME_MIN["sensitivity"],
        gpu=GPU,
    threads: 1
    script:
        "../scripts/block_sensitivity.py"
