"""Tables (CSV, Markdown, LaTeX) and the figure of one study; costs from the jobs' benchmark files."""
import json

from pruneflow.core.artifacts import load_json
from pruneflow.core.runtime import job
from pruneflow.report import tables as report
from pruneflow.report.claims import read_bands

inp, out, par = snakemake.input, snakemake.output, snakemake.params
with job(snakemake.log[0], snakemake.threads):
    ppl = [load_json(p) for p in inp.ppl]
    benchmarks = {path: report.read_benchmark(path) for path in inp.benchmarks}
    costs = json.loads(par.costs)
    summaries = [{**p["summary"], **report.variant_costs(costs[p["variant"]], benchmarks)} for p in ppl]
    title = f"{par.title} ({par.model})"
    if par.kind == "sensitivity":  # one row per block pruned alone, with its job's time
        seconds = [report.read_benchmark(b)["seconds"] for b in inp.sensitivity_benchmarks]
        df = report.sensitivity_rows(par.model, [load_json(p) for p in inp.sensitivity], seconds)
    elif par.kind == "structured":
        speed = [load_json(p) for p in inp.speed] if "speed" in inp.keys() else None
        df = report.structured_rows(par.model, ppl, summaries, speed)
    else:
        sparsity = [p["sparsity"] for p in ppl]
        df = report.study_rows(par.model, ppl, sparsity, summaries, par.reference)
        df = report.add_fallback_column(df, summaries)  # numerical fallbacks of the variants' solves, if any
        if "bands" in inp.keys():  # the noise band measured for a row's method and pattern, if any
            df = report.add_band_column(df, read_bands(inp.bands[0]))
    df = report.add_dtype_column(df, [p["summary"] for p in ppl])
    if "zeroshot" in inp.keys():
        df = report.add_zeroshot_columns(df, [load_json(p) for p in inp.zeroshot], json.loads(par.zeroshot_metric))
    report.write_table(df, out.csv, out.md, out.tex)
    if par.kind == "sensitivity":
        report.plot_sensitivity(df, out.png, out.pdf, title)
    elif par.kind == "structured":
        report.plot_ppl_vs_removed(df, out.png, out.pdf, title)
    elif par.kind == "recovery":
        report.plot_recovery(df, out.png, out.pdf, title)
    else:
        report.plot_ppl_vs_sparsity(df, out.png, out.pdf, title)
    print(df.to_string())
