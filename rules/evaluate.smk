# Perplexity on held-out text and the measured sparsity of every pruned matrix.


rule perplexity:
    input:
        model=variant_dir,
        docs="results/corpora/{corpus}/eval.jsonl",
    output:
        "results/{model}/eval/{variant}/ppl-{corpus}-l{seqlen}-w{windows}-bos{bos}.json",
    wildcard_constraints:
        seqlen=r"\d+",
        windows=r"\d+",
        bos=r"auto|true|false",
    log:
        "results/logs/{model}/eval/{variant}/ppl-{corpus}-l{seqlen}-w{windows}-bos{bos}.log",
    benchmark:
        "results/benchmarks/{model}/eval/{variant}/ppl-{corpus}-l{seqlen}-w{windows}-bos{bos}.tsv"
    resources:
        mem_mb=mem_mb("perplexity"),
        runtime=RUNTIME_MIN["perplexity"],
        gpu=GPU,
    threads: 1
    script:
        "../scripts/eval_perplexity.py"


rule sparsity:
    input:
        model=variant_dir,
    output:
        "results/{model}/eval/{variant}/sparsity.json",
    log:
        "results/logs/{model}/eval/{variant}/sparsity.log",
    resources:
        mem_mb=mem_mb("sparsity"),
        runtime=RUNTIME_MIN["sparsity"],
    threads: 1
    script:
        "../scripts/eval_sparsity.py"
