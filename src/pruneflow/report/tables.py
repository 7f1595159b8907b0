"""Tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) from evaluation results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pruneflow.core.artifacts import save_file  # noqa: E402
from pruneflow.core.atomic import atomic_path  # noqa: E402
from pruneflow.core.fallbacks import totals  # noqa: E402
from pruneflow.report.paper_numbers import REFERENCES  # noqa: E402
from pruneflow.spec import naming, registry  # noqa: E402
from pruneflow.spec.naming import parse_recovery  # noqa: E402

STYLE = {"figure.figsize": (5.5, 3.6), "figure.dpi": 150, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9}


def write_table(df: pd.DataFrame, csv: str, md: str, tex: str | None = None, floatfmt: str = ".2f") -> None:
    """The CSV is the table read back (the claims ledger): a file artifact with its manifest (checked when read)."""
    save_file(csv, df.to_csv(index=False).encode())
    with atomic_path(md) as tmp:
        tmp.write_text(df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    if tex:
        with atomic_path(tex) as tmp:
            tmp.write_text(df.to_latex(index=False, float_format=lambda x: format(x, floatfmt)))


def save_figure(fig, png: str, pdf: str) -> None:
    for path in (png, pdf):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], bbox_inches="tight")
    plt.close(fig)


def _finish_ppl_figure(fig, ax, df: pd.DataFrame, dense_mask, xlabel: str, title: str, png: str, pdf: str, fontsize=8) -> None:
    """The shared end of every perplexity figure: dense line, log scale, labels, legend, files."""
    dense = df[dense_mask]
    if len(dense):
        ax.axhline(dense.perplexity.iloc[0], color="black", linestyle="--", linewidth=1, label="dense")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title.replace("$", r"\$"))  # titles are plain text: a "$" would start matplotlib's math mode
    ax.legend(fontsize=fontsize)
    save_figure(fig, png, pdf)


def plot_ppl_vs_sparsity(df: pd.DataFrame, png: str, pdf: str, title: str = "") -> None:
    """Several unstructured sparsities: one line per method over them. Otherwise (one ratio, N:M
    patterns): grouped bars, one group per pattern, one bar per method. The dense model: a dashed line.

    Rows that share a label and a pattern (calibration seeds) are drawn as their mean, with their range as an error bar.
    ``df`` needs columns: method, pattern, sparsity, perplexity (dense row: method 'dense').
    """
    pruned = df[df.method != "dense"]
    # one line (or bar) per method and allocation, refinement and criterion settings ("-": the defaults, unnamed)
    for column in ("allocation", "refinement", "settings"):
        if column in pruned and pruned[column].nunique() > 1:
            pruned = pruned.assign(method=pruned.method + (" " + pruned[column]).where(pruned[column] != "-", ""))
    is_nm = pruned.pattern.astype(str).str.contains(":")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        if pruned[~is_nm].sparsity.nunique() > 1:
            for method, group in pruned[~is_nm].groupby("method", sort=False):
                mean, err = _spread(group.perplexity, group.sparsity)
                ax.errorbar(mean.index * 100, mean.values, yerr=err, marker="o", capsize=2, label=method)
            xlabel = "sparsity of the pruned linear layers (%)"
        else:
            patterns = list(dict.fromkeys(pruned.pattern.astype(str)))
            methods = list(dict.fromkeys(pruned.method))
            width = 0.8 / len(methods)
            for j, method in enumerate(methods):
                rows = pruned[pruned.method == method]
                present = [p for p in patterns if p in set(rows.pattern.astype(str))]
                mean, err = _spread(rows.perplexity, rows.pattern.astype(str), present)
                ax.bar([i + j * width for i, p in enumerate(patterns) if p in present], mean.values, width, yerr=err,
                       capsize=2, label=method)
            ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(patterns))])
            ax.set_xticklabels([f"{float(p):.0%}" if ":" not in p else p for p in patterns])
            xlabel = "sparsity pattern"
        _finish_ppl_figure(fig, ax, df, df.method == "dense", xlabel, title, png, pdf)


def _spread(values: pd.Series, by: pd.Series, order: list | None = None) -> tuple[pd.Series, list]:
    """``values`` grouped ``by`` (in ``order``, else sorted): each group's mean, and the distances from it to the
    group's min and max ([below, above], zero for a single row), as matplotlib's ``yerr`` takes them."""
    groups = values.groupby(by.values).agg(["mean", "min", "max"])
    groups = groups.reindex(order) if order is not None else groups.sort_index()
    return groups["mean"], [(groups["mean"] - groups["min"]).tolist(), (groups["max"] - groups["mean"]).tolist()]


def read_benchmark(path) -> dict:
    """Wall seconds and peak resident memory (MB) of one job, from its Snakemake ``benchmark:`` file."""
    row = pd.read_csv(path, sep="\t").iloc[0]
    return {"seconds": float(row["s"]), "max_rss_mb": float(row["max_rss"])}


def variant_costs(steps: dict[str, list[str]], benchmarks: dict[str, dict]) -> dict:
    """Cost columns of one variant: the seconds of the jobs that made it, summed, and their peak memory.

    ``steps`` is {"prune": [benchmark files], "recover": [...]} (shared steps such as the activation
    cache included, so methods compare from scratch); a variant with no pruning job (dense) costs 0.
    """
    def of(files, key, combine):
        return combine(benchmarks[f][key] for f in files) if files else None

    out = {"prune_seconds": of(steps["prune"], "seconds", sum) or 0.0}
    if steps["prune"]:
        out["peak_memory_mb"] = of(steps["prune"], "max_rss_mb", max)
    if steps["recover"]:
        out["recover_seconds"] = of(steps["recover"], "seconds", sum)
        out["recover_peak_memory_mb"] = of(steps["recover"], "max_rss_mb", max)
    return out


def study_rows(model: str, ppl: list[dict], sparsity: list[dict], summaries: list[dict], reference: str | None = None) -> pd.DataFrame:
    """One row per variant, the dense model first (inputs are parallel lists in variant order).

    With ``reference`` (a key of :data:`pruneflow.report.paper_numbers.REFERENCES`), a last column shows
    the published number for the same method and pattern, labelled as the paper's.
    """
    rows = []
    for p, s, summary in zip(ppl, sparsity, summaries):
        pattern = summary.get("pattern", "")
        rows.append(
            {
                "model": model,
                "method": summary.get("criterion", "dense"),
                "pattern": pattern.replace("of", ":") if "of" in pattern else pattern.removeprefix("u"),
                "sparsity": summary.get("sparsity", 0.0),
                "stream": summary.get("stream") or "-",
                "calibration": summary.get("calibration", "-"),
                "perplexity": p["perplexity"],
                "measured_sparsity": s["overall"],
                "prune_s": summary.get("prune_seconds", 0.0),
                "peak_mem_mb": summary.get("peak_memory_mb", float("nan")),
            }
        )
    df = pd.DataFrame(rows)
    if any("recovery" in s for s in summaries):
        df.insert(6, "recovery", [s.get("recovery", "none") for s in summaries])
        df.insert(7, "optimiser", [recovery_optimiser(s) for s in summaries])
        df["trainable_pct"] = [100 * (s.get("trainable_fraction") or 0.0) for s in summaries]
        df["recover_s"] = [s.get("recover_seconds", 0.0) for s in summaries]
        df["recover_peak_mb"] = [s.get("recover_peak_memory_mb", float("nan")) for s in summaries]
    if any("allocation" in s for s in summaries):  # uniform, or the allocation's path token (owl-m5-l0.08)
        df.insert(5, "allocation", [allocation_label(s) for s in summaries])
    if any("refinement" in s for s in summaries):  # a mask refinement after the criterion, with its changed settings
        df.insert(2, "refinement", [refinement_label(s) for s in summaries])
    if any("criterion_settings" in s for s in summaries):  # the criterion's hyperparameters that are not its defaults
        df.insert(2, "settings", [settings_label(s.get("criterion_settings")) for s in summaries])
    if reference:
        ref = REFERENCES[reference]
        df[ref["label"]] = [ref["values"].get((m, p), float("nan")) for m, p in zip(df.method, df.pattern)]
    return add_seed_spread(df)


def add_dtype_column(df: pd.DataFrame, summaries: list[dict]) -> pd.DataFrame:
    """A ``dtype`` column after ``model``: the dtype the dense model ran in (its summary records it; every
    variant of a run shares it), when a summary says so (results made before it was recorded do not)."""
    dtype = next((s["dtype"] for s in summaries if s.get("variant") == "dense" and "dtype" in s), None)
    if dtype is not None and "model" in df.columns:
        df.insert(list(df.columns).index("model") + 1, "dtype", dtype)
    return df


def add_fallback_column(df: pd.DataFrame, summaries: list[dict]) -> pd.DataFrame:
    """A ``fallbacks`` column when a variant's solve fell back (:mod:`pruneflow.core.fallbacks`): per kind, how often
    and in how many layers (``dampening_raised ×3 in 2 layers``); ``none``, or ``-`` where not recorded (dense)."""
    if any(s.get("fallbacks") for s in summaries):
        df["fallbacks"] = [
            ("; ".join(f"{kind} ×{n} in {layers} layer{'s' * (layers != 1)}" for kind, (layers, n) in totals(s["fallbacks"]).items())
             or "none") if "fallbacks" in s else "-"
            for s in summaries
        ]
    return df


def recovery_optimiser(summary: dict) -> str:
    """How a recovery trained: ``closed form`` (a solved one, recon:matrix's ridge), or the optimiser and its loss
    (a unit's loss towards the dense unit, or the next-token loss of a whole-model one): its registry entry says."""
    spec = summary.get("recovery")
    if not spec:
        return "-"
    recovery = parse_recovery(spec)
    if recovery.entry.options["closed_form"]:
        return "closed form"
    optimiser = summary.get("settings", {}).get("optimizer", "adamw")
    unit_loss = not recovery.whole_model
    return f"{optimiser} ({summary.get('settings', {}).get('loss', 'mse') if unit_loss else 'next-token'})"


def add_band_column(df: pd.DataFrame, bands: list[dict]) -> pd.DataFrame:
    """``band_pct``: the spread (max/min − 1, % of perplexity) measured for a row's method, pattern and calibration
    over float order (threads, sample order, batch size, float64), calibration seeds and the reference
    implementations' results (``bench/noise_band.py``, docs/reproducibility.md); NaN where none was measured.
    Two rows closer than their bands are not ordered by this table."""
    from pruneflow.report.claims import band_column

    out = df.copy()
    out["band_pct"] = band_column(out, bands)
    return out


def add_seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """``seed_spread_pct``: where a study pruned a method with several calibration seeds (``calibration_seeds``),
    each row's spread over them (max/min − 1 of the perplexity, in %), measured by this run itself; unchanged
    otherwise."""
    seeded = df[~df.calibration.isin(["-", "none"])]
    if seeded.calibration.nunique() < 2:
        return df
    keys = [k for k in ("method", "pattern", "stream", "allocation") if k in df]
    spread = seeded.groupby(keys, sort=False).perplexity.agg(lambda v: 100 * (v.max() / v.min() - 1) if len(v) > 1 else float("nan"))
    out = df.copy()
    out["seed_spread_pct"] = [spread.get(tuple(r[k] for k in keys), float("nan")) if r.calibration not in ("-", "none")
                              else float("nan") for _, r in df.iterrows()]
    return out


def allocation_label(summary: dict) -> str:
    """The allocation's path token (owl-m5-l0.08), the implicit one's name (uniform), or - for the dense model."""
    if not summary.get("allocation"):
        return registry.implicit("allocation") if "criterion" in summary else "-"
    if "allocation_token" in summary:
        return summary["allocation_token"]
    entry = registry.get("allocation", summary["allocation"])  # summaries written before the token was recorded
    settings = {param: summary[key] for key, param in entry.options.get("study_keys", {}).items()}
    return naming.Part.of("allocation", {"name": entry.name, **settings}).token


def refinement_label(summary: dict) -> str:
    """A variant's mask refinement and the settings it changed from their defaults (``dsnot``, ``dsnot max_cycles=10``);
    ``none`` for a pruned variant without one, ``-`` for the dense model."""
    if not summary.get("refinement"):
        return "none" if summary.get("criterion") else "-"
    changed = registry.get("refinement", summary["refinement"]).changed(summary.get("refinement_settings", {}))
    return f"{summary['refinement']} {settings_label(changed)}".removesuffix(" -")


def settings_label(settings: dict | None) -> str:
    """Hyperparameters spelled out (``a=0.3 blocksize=64``), ``-`` for none changed."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (settings or {}).items()) or "-"


def plot_block_sparsity(variants: list[dict], allocations: list[dict], png: str, pdf: str, title: str = "") -> None:
    """Top: the outlier ratio of every block (OWL's input, one line per M). Bottom: the sparsity measured in
    every block of each variant: colour per requested sparsity, solid for OWL, dashed for uniform.

    ``variants``: {"criterion", "sparsity", "allocation" (a label), "per_block": [measured sparsity]};
    ``allocations``: the allocation artifacts' JSON (``outlier_ratios``, ``m``)."""
    sparsities = sorted({v["sparsity"] for v in variants})
    colours = {s: plt.cm.viridis(i / max(len(sparsities) - 1, 1) * 0.85) for i, s in enumerate(sparsities)}
    uniform_label = registry.implicit("allocation")
    labels = list(dict.fromkeys(v["allocation"] for v in variants if v["allocation"] != uniform_label))
    markers = dict(zip(dict.fromkeys(v["criterion"] for v in variants), "o^sDv<>"))
    styles = {label: ls for label, ls in zip(labels, ["-", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))] * 4)}
    with plt.rc_context({**STYLE, "figure.figsize": (6.5, 5.2)}):
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, height_ratios=[1, 2])
        for m, alloc in {a["m"]: a for a in allocations if "outlier_ratios" in a}.items():  # OWL's input
            ratios = alloc["outlier_ratios"]
            top.plot(range(len(ratios)), [100 * r for r in ratios], marker=".", label=f"M = {m:g}")
        top.set_ylabel("outlier ratio (%)")
        if allocations:
            top.legend(fontsize=7)
        for v in variants:
            blocks = range(len(v["per_block"]))
            uniform = v["allocation"] == uniform_label
            bottom.plot(blocks, [100 * x for x in v["per_block"]], color=colours[v["sparsity"]], marker=markers[v["criterion"]],
                        markersize=3, linewidth=1, linestyle="--" if uniform else styles[v["allocation"]],
                        label=f"{v['criterion']} {v['sparsity']:.0%} {v['allocation']}")
        bottom.set_xlabel("block")
        bottom.set_ylabel("measured sparsity (%)")
        bottom.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below: the lines stay visible
        top.set_title(title.replace("$", r"\$"))
        save_figure(fig, png, pdf)


def sensitivity_rows(model: str, results: list[dict], seconds: list[float] | None = None) -> pd.DataFrame:
    """One row per (criterion, pattern, block) of a sensitivity study: perplexity with that block alone pruned."""
    rows = []
    for i, r in enumerate(results):
        for b in r["blocks"]:
            rows.append({
                "model": model, "method": r["criterion"], "pattern": r["pattern"].removeprefix("u"), "block": b["block"],
                "block_sparsity": b["sparsity"], "perplexity": b["perplexity"], "dense_perplexity": r["dense"]["perplexity"],
                "ppl_increase_pct": 100 * (b["perplexity"] / r["dense"]["perplexity"] - 1),
                "windows": r["windows"], "job_s": seconds[i] if seconds else float("nan"),
            })
    return pd.DataFrame(rows)


def plot_sensitivity(df: pd.DataFrame, png: str, pdf: str, title: str = "") -> None:
    """Perplexity with one block at a time pruned, against the block; the dense model on the same windows dashed."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for (method, pattern), group in df.groupby(["method", "pattern"], sort=False):
            label = f"{method} {float(pattern):.0%}" if ":" not in str(pattern) and "of" not in str(pattern) else f"{method} {pattern}"
            ax.plot(group.block, group.perplexity, marker="o", markersize=3, label=label)
        dense = df.assign(method="dense", perplexity=df.dense_perplexity).head(1)
        xlabel = f"block pruned alone (perplexity on {int(df.windows.iloc[0])} windows)"
        _finish_ppl_figure(fig, ax, dense, dense.method == "dense", xlabel, title, png, pdf)


def add_zeroshot_columns(df: pd.DataFrame, results: list[dict], metrics: dict[str, str] | None = None) -> pd.DataFrame:
    """One column per task, ``<metric>_<task>``, with the metric ``metrics`` names for it (``zeroshot.metric``;
    ``acc`` for a task it does not name), and ``acc_mean``, the mean of those columns. A group shows lm-eval's
    aggregate; a tag, each of its tasks. ``zeroshot_limited`` (only when some result is limited) lists per row the
    tasks scored on part of their items (``hellaswag 100/10042``), ``zeroshot_versions`` the lm-eval, transformers
    and torch that scored the row.

    ``results`` are in (variant, task) order, the tasks of one variant together, variants in the table's row order."""
    metrics = metrics or {}
    per_row = len(dict.fromkeys(r["task"] for r in results))
    rows = [results[i : i + per_row] for i in range(0, len(results), per_row)]
    cells = [{k: v for r in row for k, v in zeroshot_cells(r, metrics).items()} for row in rows]
    out = df.copy()
    columns = list(dict.fromkeys(c for row in cells for c in row))
    for column in columns:
        out[column] = [row.get(column, float("nan")) for row in cells]
    out["acc_mean"] = out[columns].mean(axis=1)
    limited = [[note for r in row for note in limited_notes(r)] for row in rows]
    if any(limited):
        out["zeroshot_limited"] = ["; ".join(notes) or "-" for notes in limited]
    out["zeroshot_versions"] = ["; ".join(dict.fromkeys(versions_label(r) for r in row)) for row in rows]
    return out


def zeroshot_cells(result: dict, metrics: dict[str, str]) -> dict[str, float]:
    """{column: value} of one zero-shot result: its own metric, or each of a tag's tasks'."""
    scored = result["subtasks"] if result.get("kind") == "tag" else {result["task"]: result}
    cells = {}
    for name, row in scored.items():
        metric = metrics.get(name, "acc")
        if metric not in row:
            reported = [m for m in ("acc", "acc_norm") if m in row]
            raise ValueError(f"zeroshot.metric.{name}: {metric!r} is not reported by task {name!r}; allowed: {', '.join(reported)}")
        cells[f"{metric}_{name}"] = row[metric]
    return cells


def limited_notes(result: dict) -> list[str]:
    """``task n/n_total`` for each task of a result scored on part of its items (zeroshot.limit)."""
    scored = result["subtasks"] if result.get("kind") == "tag" else {result["task"]: result}
    return [f"{name} {row['n']}/{row['n_total']}" for name, row in scored.items() if row.get("limited")]


def versions_label(result: dict) -> str:
    """``lm_eval 0.4.13, transformers 5.25.0, torch 2.13.0`` of a zero-shot result (``unrecorded`` before they were)."""
    versions = result.get("versions")
    return ", ".join(f"{k} {v}" for k, v in versions.items()) if versions else "unrecorded"


def structured_rows(model: str, ppl: list[dict], summaries: list[dict], speed: list[dict] | None = None) -> pd.DataFrame:
    """One row per structured variant, dense first: what was removed, the size left, perplexity, speed."""
    # the dense model's size: every structured variant records it (the dense summary does not), speed or not
    before = [s["params_before"] for s in summaries if "params_before" in s]
    dense_params = before[0] if before else (speed[0]["parameters"] if speed else float("nan"))
    rows = []
    for i, (p, s) in enumerate(zip(ppl, summaries)):
        params = s.get("params_after", speed[i]["parameters"] if speed else dense_params)
        rows.append(
            {
                "model": model,
                "criterion": s.get("criterion", "dense"),
                "target": s.get("target", "-"),
                "ratio": s.get("ratio", 0.0),
                "reconstruction": s.get("reconstruction", "-"),
                "damping": _damping_label(s),
                "damping_chosen": _damping_chosen(s),
                "params_m": params / 1e6,
                "removed_params_pct": 100 * (1 - params / dense_params),
                "perplexity": p["perplexity"],
                "prune_s": s.get("prune_seconds", 0.0),
                "peak_mem_mb": s.get("peak_memory_mb", float("nan")),
            }
        )
    df = pd.DataFrame(rows)
    if speed:
        df["tokens_per_s"] = [x["tokens_per_second"] for x in speed]
    return df


def _damping_label(summary: dict) -> str:
    """``auto``, a fixed λ as a number, or ``-`` for a reconstruction without one."""
    damping = summary.get("damping")
    if damping is None:
        return "-"
    return "auto" if damping == "auto" else f"{float(damping):g}"


def _damping_chosen(summary: dict) -> str:
    """How often each λ won the held-out choice (``0.3×18 1×12``), for damping auto."""
    return " ".join(f"{k}×{v}" for k, v in (summary.get("damping_chosen") or {}).items()) or "-"


def plot_ppl_vs_removed(df: pd.DataFrame, png: str, pdf: str, title: str = "") -> None:
    """Perplexity against the share of parameters removed, one line per criterion × reconstruction."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        pruned = df[df.criterion != "dense"]
        keys = [k for k in ("criterion", "target", "reconstruction", "damping") if k in pruned]
        for key, group in pruned.groupby(keys, sort=False):
            group = group.sort_values("removed_params_pct")
            named = dict(zip(keys, key))
            label = " ".join(named[k] for k in ("criterion", "target") if k in named) + f" + {named['reconstruction']}"
            if named.get("damping", "-") != "-":
                label += f" λ={named['damping']}"
            ax.plot(group.removed_params_pct, group.perplexity, marker="o", label=label)
        xlabel = "parameters removed (% of the dense model)"
        _finish_ppl_figure(fig, ax, df, df.criterion == "dense", xlabel, title, png, pdf, fontsize=7)


def plot_recovery(df: pd.DataFrame, png: str, pdf: str, title: str = "") -> None:
    """One sparsity: a Pareto view (peak memory of the recovery job vs perplexity, one point per recovery).
    Several sparsities: perplexity vs sparsity, one line per method × recovery, trainable share in the legend."""
    pruned = df[df.method != "dense"]
    methods = list(dict.fromkeys(pruned.method))
    if pruned.sparsity.nunique() > 1 and len(methods) > 1:
        _plot_recovery_panels(df, pruned, methods, png, pdf, title)
        return
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        if pruned.sparsity.nunique() > 1:
            for (method, rec), group in pruned.groupby(["method", "recovery"], sort=False):
                group = group.sort_values("sparsity")
                share = group.trainable_pct.iloc[0]
                label = f"{method} + {rec}" + (f" ({share:.3g}% trainable)" if rec != "none" else "")
                ax.plot(group.sparsity * 100, group.perplexity, marker="o", label=label)
            xlabel = "sparsity of the pruned linear layers (%)"
        else:
            markers = "osD^v<>PX*"
            for k, (_, row) in enumerate(pruned.iterrows()):
                x = row.recover_peak_mb if row.recovery != "none" else row.peak_mem_mb
                label = f"{row.method} {row.pattern}: " + (row.recovery.removesuffix(":all").removesuffix(":pruned") or "none")
                ax.scatter(x, row.perplexity, s=30, marker=markers[k % len(markers)], label=label)
            xlabel = "peak memory of the job (MB RSS; recovery jobs hold the dense and the pruned model)"
        _finish_ppl_figure(fig, ax, df, df.method == "dense", xlabel, title, png, pdf, fontsize=6)


def _plot_recovery_panels(df: pd.DataFrame, pruned: pd.DataFrame, methods: list[str], png: str, pdf: str, title: str) -> None:
    """PERP's Figure 1 layout: one panel per pruning criterion, perplexity against sparsity, one line per
    recovery (its trainable share in the legend), the dense model dashed."""
    dense = df[df.method == "dense"]
    with plt.rc_context({**STYLE, "figure.figsize": (4.2 * len(methods), 3.6)}):
        fig, axes = plt.subplots(1, len(methods), sharey=True, squeeze=False)
        for ax, method in zip(axes[0], methods):
            for rec, group in pruned[pruned.method == method].groupby("recovery", sort=False):
                group = group.sort_values("sparsity")
                share = group.trainable_pct.iloc[0]
                short = rec.removesuffix(":all").removesuffix(":pruned")
                ax.plot(group.sparsity * 100, group.perplexity, marker="o", label=short + (f" ({share:.3g}%)" if rec != "none" else ""))
            if len(dense):
                ax.axhline(dense.perplexity.iloc[0], color="black", linestyle="--", linewidth=1, label="dense")
            ax.set_yscale("log")
            ax.set_title(method)
            ax.set_xlabel("sparsity (%)")
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel("perplexity (log scale)")
        fig.suptitle(title.replace("$", r"\$"), fontsize=9)
        save_figure(fig, png, pdf)
