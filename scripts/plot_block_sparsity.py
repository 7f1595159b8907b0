"""The per-block sparsity figure of a study with an OWL allocation: outlier ratios per block, and the
sparsity measured in every block of its variants (from their sparsity.json)."""
from pathlib import Path

from pruneflow.core.artifacts import load_json
from pruneflow.core.runtime import job
from pruneflow.prune.allocation import read_allocation
from pruneflow.report import tables as report

inp, out, par = snakemake.input, snakemake.output, snakemake.params
with job(snakemake.log[0], snakemake.threads):
    variants = []
    for folder in inp.variants:
        summary = load_json(Path(folder) / "summary.json")
        blocks = load_json(Path(folder) / "sparsity.json")["per_block"]
        variants.append({"criterion": summary["criterion"], "sparsity": summary["sparsity"],
                         "allocation": report.allocation_label(summary),
                         "per_block": [b["sparsity"] for b in blocks]})
    allocations = [read_allocation(folder) for folder in inp.allocations]
    report.plot_block_sparsity(variants, allocations, out.png, out.pdf, f"{par.title} ({par.model}): per-block sparsity")
    for v in variants:
        print(v["criterion"], v["sparsity"], v["allocation"], [round(x, 4) for x in v["per_block"]])
