# Per-block sparsity: a registered allocation's per-block ratios (OWL's: an artifact between the activation
# cache and the masks, so a changed lambda reruns the allocation, the masks and below, never the cache), the
# figure of the measured per-block sparsity of a study's variants, and the optional per-block sensitivity study.
ALLOCATION_ID = ex.part_regex("allocation") + r"-u[0-9.]+"


rule allocation:
    input:
        model="results/{model}/dense",
        cache=allocation_cache,
    output:
        directory("results/{model}/allocation/{calib}/{allocation}"),
    log:
        "results/logs/{model}/allocation/{calib}/{allocation}.log",
    benchmark:
        "results/benchmarks/{model}/allocation/{calib}/{allocation}.tsv"
    wildcard_constraints:
        allocation=ALLOCATION_ID,
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=lambda w: mem_mb("allocation", f"allocation/{w.calib}/{w.allocation}"),
        runtime=RUNTIME_MIN["allocation"],
    script:
        "../scripts/compute_allocation.py"


rule block_sparsity_figure:
    input:
        unpack(block_figure_inputs),
    output:
        png=report(
            "results/figures/blocks/{study}.png",
            caption="captions/blocks.rst",
            category="Figures",
        ),
        pdf="results/figures/blocks/{study}.pdf",
    log:
        "results/logs/report/blocks/{study}.log",
    benchmark:
        "results/benchmarks/report/blocks/{study}.tsv"
    conda:
        "../envs/pruneflow.yaml"
    threads: 1
    params:
        model=MODEL,
        title=lambda w: config["studies"][w.study].get("title", w.study),
    script:
        "../scripts/plot_block_sparsity.py"


rule sensitivity:
    input:
        model="results/{model}/dense",
        cache=lambda w: (
            f"results/{w.model}/acts/{w.calib}"
            if ex.parse_part(ex.SCORER_KINDS, w.criterion).entry.needs_calibration
            else []
        ),
        docs="results/corpora/{corpus}/eval.jsonl",
    output:
        "results/{model}/sensitivity/{calib}/{criterion}-{pattern}/ppl-{corpus}-l{seqlen}-w{windows}-{protocol}.json",
    log:
        "results/logs/{model}/sensitivity/{calib}/{criterion}-{pattern}/ppl-{corpus}-l{seqlen}-w{windows}-{protocol}.log",
    benchmark:
        "results/benchmarks/{model}/sensitivity/{calib}/{criterion}-{pattern}/ppl-{corpus}-l{seqlen}-w{windows}-{protocol}.tsv"
    wildcard_constraints:
        criterion=ex.part_regex(ex.SCORER_KINDS),
        pattern=ex.PATTERN_TOKEN,
        seqlen=r"\d+",
        windows=r"\d+",
        protocol=r"bos(?:auto|true|false)|ref",
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("sensitivity"),
        runtime=RUNTIME_MIN["sensitivity"],
        gpu=GPU,
    params:
        spec=lambda w, output: ex.parse_ppl_name(Path(output[0]).name),
    script:
        "../scripts/block_sensitivity.py"
