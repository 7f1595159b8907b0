# The model as a Hugging Face folder (the dense variant), corpora split into calibration and held-out text, calibration samples.


rule model:
    input:
        model_files,
    output:
        directory("results/{model}/dense"),
    log:
        "results/logs/{model}/model.log",
    benchmark:
        "results/benchmarks/{model}/dense.tsv"
    conda:
        "../envs/pruneflow.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("model"),
        runtime=RUNTIME_MIN["model"],
    params:
        spec=lambda w: as_json(model_spec(w.model)),
    script:
        "../scripts/materialize_model.py"


rule corpus:
    input:
        corpus_files,
    output:
        calib="results/corpora/{corpus}/calib.jsonl",
        eval="results/corpora/{corpus}/eval.jsonl",
    log:
        "results/logs/corpora/{corpus}.log",
    benchmark:
        "results/benchmarks/corpora/{corpus}.tsv"
    conda:
        "../envs/pruneflow.yaml"
    threads: 1
    params:
        spec=lambda w: as_json(corpus_spec(w.corpus)),
    script:
        "../scripts/prepare_corpus.py"


rule calibration:
    input:
        model="results/{model}/dense",
        docs="results/corpora/{corpus}/calib.jsonl",
    output:
        "results/{model}/calib/{corpus}-n{nsamples}-l{seqlen}-s{seed}.safetensors",
    log:
        "results/logs/{model}/calib/{corpus}-n{nsamples}-l{seqlen}-s{seed}.log",
    benchmark:
        "results/benchmarks/{model}/calib/{corpus}-n{nsamples}-l{seqlen}-s{seed}.tsv"
    wildcard_constraints:
        nsamples=r"\d+",
        seqlen=r"\d+",
        seed=r"\d+",
    conda:
        "../envs/pruneflow.yaml"
    threads: 1
    script:
        "../scripts/sample_calibration.py"
