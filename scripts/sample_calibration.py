"""Draw nsamples windows of seqlen tokens with a seed; store them as safetensors."""
from transformers import AutoTokenizer

from pruneflow.data.calibration import sample_windows, save_calibration
from pruneflow.data.corpora import describe
from pruneflow.data.jsonl import read_texts
from pruneflow.core.runtime import job

w = snakemake.wildcards
with job(snakemake.log[0], snakemake.threads):
    tok = AutoTokenizer.from_pretrained(f"{snakemake.input.model}/model")
    source = f"{describe(snakemake.config['corpora'][w.corpus], w.corpus)}, calibration part {snakemake.input.docs}"
    ids = sample_windows(read_texts(snakemake.input.docs), tok, int(w.nsamples), int(w.seqlen), int(w.seed), source)
    save_calibration(snakemake.output[0], ids, corpus=w.corpus, seed=w.seed)
