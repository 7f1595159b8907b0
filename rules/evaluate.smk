# Perplexity on held-out text; export of a study's variants (or one variant) as self-contained Hugging Face folders.
# Measured sparsity and the mask check are written with each variant (sparsity.json in its folder),
# where the model is already in memory, so no evaluation job loads a variant for them.


rule perplexity:
    input:
        model=variant_dir,
        parents=variant_parents,
        docs="results/corpora/{corpus}/eval.jsonl",
    output:
        "results/{model}/eval/{variant}/ppl-{corpus}-l{seqlen}-w{windows}-{protocol}.json",
    log:
        "results/logs/{model}/eval/{variant}/ppl-{corpus}-l{seqlen}-w{windows}-{protocol}.log",
    benchmark:
        "results/benchmarks/{model}/eval/{variant}/ppl-{corpus}-l{seqlen}-w{windows}-{protocol}.tsv"
    wildcard_constraints:
        seqlen=r"\d+",
        windows=r"\d+",
        protocol=r"bos(?:auto|true|false)|ref",  # PruneFlow's (with its bos setting) or the reference's
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("perplexity"),
        runtime=RUNTIME_MIN["perplexity"],
        gpu=GPU,
    params:
        spec=lambda w, output: ex.parse_ppl_name(Path(output[0]).name),
    script:
        "../scripts/eval_perplexity.py"


# On demand, never part of `all`: snakemake --cores 2 results/export/<study>. Each variant a folder with its
# model card (README.md) and record (pruneflow.json), and index.csv; one variant in memory at a time.
rule export_study:
    input:
        unpack(export_inputs),
    output:
        directory("results/export/{study}"),
    log:
        "results/logs/export/{study}.log",
    benchmark:
        "results/benchmarks/export/{study}.tsv"
    wildcard_constraints:
        study=STUDY_NAMES,
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("export"),
        runtime=lambda w: RUNTIME_MIN["export"] * len(export_plan(w.study)["variants"]),
    params:
        plan=lambda w: as_json(export_plan(w.study)),
    script:
        "../scripts/export_study.py"


# On demand: one variant, weights and tokenizer only: snakemake --cores 1 results/<model>/export/<variant>
rule export:
    input:
        model=variant_dir,
        parents=variant_parents,
    output:
        directory("results/{model}/export/{variant}"),
    log:
        "results/logs/{model}/export/{variant}.log",
    benchmark:
        "results/benchmarks/{model}/export/{variant}.tsv"
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("export"),
        runtime=RUNTIME_MIN["export"],
    script:
        "../scripts/export_variant.py"
