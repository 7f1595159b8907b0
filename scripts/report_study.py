"""Tables (CSV, Markdown, LaTeX) and the figure of one study."""
from pathlib import Path

from pruneflow import report
from pruneflow.io import read_json
from pruneflow.runtime import job

inp, out, par = snakemake.input, snakemake.output, snakemake.params
with job(snakemake.log[0], snakemake.threads):
    ppl = [read_json(p) for p in inp.ppl]
    summaries = [read_json(Path(v) / "summary.json") for v in inp.variants]
    title = f"{par.title} ({par.model})"
    if par.kind == "structured":
        speed = [read_json(p) for p in inp.speed] if "speed" in inp.keys() else None
        df = report.structured_rows(par.model, ppl, summaries, speed)
    else:
        df = report.study_rows(par.model, ppl, [read_json(p) for p in inp.sparsity], summaries, par.reference)
    if "zeroshot" in inp.keys():
        df = report.add_zeroshot_columns(df, [read_json(p) for p in inp.zeroshot])
    report.write_table(df, out.csv, out.md, out.tex)
    if par.kind == "structured":
        report.plot_ppl_vs_removed(df, out.png, out.pdf, title)
    elif par.kind == "recovery":
        report.plot_recovery(df, out.png, out.pdf, title)
    else:
        report.plot_ppl_vs_sparsity(df, out.png, out.pdf, title)
    print(df.to_string())
