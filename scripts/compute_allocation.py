"""A registered allocation's per-block sparsities (OWL: outlier ratios of the dense model's Wanda scores from the
activation cache's input norms), whose mean is the requested ratio; what made them recorded beside them."""
from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.runtime import job
from pruneflow.core.stream import open_stream
from pruneflow.prune.allocation import block_sizes, write_allocation
from pruneflow.spec.naming import known_parts, parse_allocation_id

allocation, sparsity = parse_allocation_id(snakemake.wildcards.allocation, known_parts(snakemake.config))
settings = allocation.settings
with job(snakemake.log[0], snakemake.threads):
    stream = open_stream(snakemake.input.model, tokenizer=False)
    result = allocation.entry.load()(stream, snakemake.input.get("cache") or None, sparsity, block_sizes(stream), **settings)
    result = {**result, "allocation": allocation.name, "settings": settings, "sparsity": sparsity}
    with artifact_folder(snakemake.output[0]) as out:
        write_allocation(out, result)
    print({"allocation": allocation.name, **settings, "sparsity": sparsity})
    for key, values in result.items():
        if isinstance(values, list):
            print(f"{key.replace('_', ' ')}:", [round(v, 5) for v in values])
