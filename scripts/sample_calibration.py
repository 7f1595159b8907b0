"""Draw nsamples windows of seqlen tokens with a seed; store them as safetensors."""
from transformers import AutoTokenizer

from pruneflow.calibration import sample_windows
from pruneflow.io import save_tensors
from pruneflow.jsonl import read_texts
from pruneflow.runtime import job

w = snakemake.wildcards
with job(snakemake.log[0], snakemake.threads):
    tok = AutoTokenizer.from_pretrained(f"{snakemake.input.model}/model")
    ids = sample_windows(read_texts(snakemake.input.docs), tok, int(w.nsamples), int(w.seqlen), int(w.seed))
    save_tensors(snakemake.output[0], {"input_ids": ids}, metadata={"corpus": w.corpus, "seed": w.seed})
