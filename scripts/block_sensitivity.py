"""Per-block sensitivity: perplexity on the first windows of the protocol with one block at a time pruned."""
from pruneflow.core.artifacts import save_json
from pruneflow.core.runtime import job, resolve_device, runtime_settings
from pruneflow.core.stream import open_stream
from pruneflow.data.corpora import describe
from pruneflow.data.jsonl import load_texts
from pruneflow.evaluate.perplexity import protocol_windows
from pruneflow.evaluate.sensitivity import block_sensitivity
from pruneflow.prune.criteria import get_criterion
from pruneflow.spec.config import window_batch_size
from pruneflow.spec.naming import SCORER_KINDS, known_parts, parse_part
from pruneflow.spec.patterns import parse_pattern

rt = runtime_settings(snakemake.config)
w = snakemake.wildcards
spec = snakemake.params.spec  # corpus, seqlen, windows, and bos or protocol: reference (from the output name, in the rule)
pattern = parse_pattern(w.pattern)
scorer = parse_part(SCORER_KINDS, w.criterion, known_parts(snakemake.config))  # its settings from the studies
with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.get("gpu", 0)):
    stream = open_stream(snakemake.input.model)
    source = f"{describe(snakemake.config['corpora'][w.corpus], w.corpus)}, held-out part {snakemake.input.docs},"
    windows = protocol_windows(load_texts(snakemake.input.docs), stream.tokenizer, spec, source)
    result = block_sensitivity(stream, get_criterion(scorer.name, scorer.settings), pattern, windows, snakemake.input.get("cache") or None,
                               window_batch_size(rt), resolve_device(rt["device"]))
    for b in result["blocks"]:
        print(f"block {b['block']:3d}: perplexity {b['perplexity']:.3f} (dense {result['dense']['perplexity']:.3f})")
save_json(snakemake.output[0], {**result, **spec, "criterion": w.criterion, "pattern": pattern.token,
                                 "sparsity": pattern.sparsity, "calibration": w.calib})
