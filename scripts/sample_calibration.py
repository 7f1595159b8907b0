"""Draw nsamples windows of seqlen tokens with a seed (the calibration id's protocol); store them as safetensors."""
from transformers import AutoTokenizer

from pruneflow.core.runtime import job
from pruneflow.data.calibration import calibration_windows, save_calibration
from pruneflow.data.corpora import describe
from pruneflow.data.jsonl import load_texts
from pruneflow.spec.naming import parse_calib_id

spec = parse_calib_id(snakemake.wildcards.calib)  # corpus, nsamples, seqlen, seed, protocol
with job(snakemake.log[0], snakemake.threads):
    tok = AutoTokenizer.from_pretrained(f"{snakemake.input.model}/model")
    source = f"{describe(snakemake.config['corpora'][spec['corpus']], spec['corpus'])}, calibration part {snakemake.input.docs}"
    ids = calibration_windows(load_texts(snakemake.input.docs), tok, spec["nsamples"], spec["seqlen"], spec["seed"],
                              spec["protocol"], source)
    save_calibration(snakemake.output[0], ids, corpus=spec["corpus"], seed=str(spec["seed"]), protocol=spec["protocol"])
