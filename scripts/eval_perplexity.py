"""Perplexity of one model variant on held-out text (PruneFlow's protocol or the reference's:
pruneflow.evaluate.perplexity), streamed block by block over all windows.

The result carries the variant's summary and measured sparsity, so tables need only this file (a
temporary variant is gone by the time its table is made)."""
from pathlib import Path

from pruneflow.core.artifacts import load_json, save_json
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.data.corpora import describe
from pruneflow.data.jsonl import load_texts
from pruneflow.evaluate.perplexity import perplexity, protocol_windows
from pruneflow.spec.config import window_batch_size

rt = runtime_settings(snakemake.config)
spec = snakemake.params.spec  # corpus, seqlen, windows, and bos or protocol: reference (from the output name, in the rule)
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)) as info:
    stream = open_stream(snakemake.input.model)
    corpus = snakemake.wildcards.corpus
    source = f"{describe(snakemake.config['corpora'][corpus], corpus)}, held-out part {snakemake.input.docs},"
    windows = protocol_windows(load_texts(snakemake.input.docs), stream.tokenizer, spec, source)
    result = perplexity(stream, windows, window_batch_size(rt), resolve_device(rt["device"]))
    print(result)
    folder = Path(snakemake.input.model)
    about = {name: load_json(folder / f"{name}.json") for name in ("summary", "sparsity")}
save_json(
    snakemake.output[0],
    {**result, "protocol": "pruneflow", **spec, "variant": snakemake.wildcards.variant, "seconds": info["seconds"], **about},
)
