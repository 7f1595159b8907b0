"""OWL's per-block sparsities: outlier ratios of the dense model's Wanda scores (weights and the
activation cache's input norms), mapped to block sparsities whose mean is the requested ratio."""
from pruneflow.prune.allocation import owl_allocation, write_allocation
from pruneflow.core.artifacts import artifact_folder
from pruneflow.spec.naming import parse_allocation_id
from pruneflow.core.runtime import job
from pruneflow.core.stream import open_stream

allocation, sparsity = parse_allocation_id(snakemake.wildcards.allocation)
with job(snakemake.log[0], snakemake.threads):
    stream = open_stream(snakemake.input.model, tokenizer=False)
    result = owl_allocation(stream, snakemake.input.cache, sparsity, allocation.m, allocation.lam)
    with artifact_folder(snakemake.output[0]) as out:
        write_allocation(out, result)
    print({k: result[k] for k in ("m", "lambda", "sparsity")})
    print("outlier ratios:", [round(r, 5) for r in result["outlier_ratios"]])
    print("block sparsities:", [round(s, 4) for s in result["block_sparsities"]])
