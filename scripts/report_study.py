"""Tables (CSV, Markdown, LaTeX) and the perplexity-vs-sparsity figure of one study."""
from pathlib import Path

from pruneflow.io import read_json
from pruneflow.report import plot_ppl_vs_sparsity, study_rows, write_table
from pruneflow.runtime import job

out = snakemake.output
with job(snakemake.log[0], snakemake.threads):
    df = study_rows(
        snakemake.params.model,
        [read_json(p) for p in snakemake.input.ppl],
        [read_json(p) for p in snakemake.input.sparsity],
        [read_json(Path(v) / "summary.json") for v in snakemake.input.variants],
        snakemake.params.reference,
    )
    write_table(df, out.csv, out.md, out.tex)
    plot_ppl_vs_sparsity(df, out.png, out.pdf, title=f"{snakemake.params.title} ({snakemake.params.model})")
    print(df.to_string())
