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
        sources=source_checksums(model_files, lambda w: f"results/{w.model}/dense"),
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
        sources=source_checksums(
            corpus_files, lambda w: f"results/corpora/{w.corpus}/calib.jsonl"
        ),
    script:
        "../scripts/prepare_corpus.py"


rule calibration:
    input:
        model="results/{model}/dense",
        docs=lambda w: f"results/corpora/{ex.parse_calib_id(w.calib)['corpus']}/calib.jsonl",
    output:
        "results/{model}/calib/{calib}.safetensors",
    log:
        "results/logs/{model}/calib/{calib}.log",
    benchmark:
        "results/benchmarks/{model}/calib/{calib}.tsv"
    wildcard_constraints:
        calib=ex.CALIB_ID_PATTERN,
    conda:
        "../envs/pruneflow.yaml"
    threads: 1
    script:
        "../scripts/sample_calibration.py"
