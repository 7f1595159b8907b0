import pandas as pd
import pytest

from pruneflow.report import tables as report


def _df():
    rows = [("dense", "", 0.0, "none", 14.0)] + [
        (m, str(s), s, rec, p) for m, s, rec, p in [
            ("wanda", 0.5, "none", 38.0), ("wanda", 0.7, "none", 200.0), ("wanda", 0.5, "retrain:norms", 30.0),
            ("wanda", 0.7, "retrain:norms", 120.0), ("magnitude", 0.5, "none", 300.0), ("magnitude", 0.7, "none", 3000.0),
        ]
    ]
    df = pd.DataFrame(rows, columns=["method", "pattern", "sparsity", "recovery", "perplexity"])
    df["trainable_pct"] = 0.03
    df["recover_peak_mb"] = 2000.0
    df["peak_mem_mb"] = 1000.0
    return df


def test_every_figure_kind_writes_png_and_pdf(tmp_path):
    df = _df()
    report.plot_ppl_vs_sparsity(df, tmp_path / "a.png", tmp_path / "a.pdf", "t")
    report.plot_recovery(df, tmp_path / "b.png", tmp_path / "b.pdf", "t")
    report.plot_recovery(df[df.sparsity != 0.7], tmp_path / "c.png", tmp_path / "c.pdf", "t")  # Pareto view
    structured = pd.DataFrame({"criterion": ["dense", "liar", "liar"], "reconstruction": ["-", "liar", "liar"],
                               "removed_params_pct": [0, 10, 20], "perplexity": [14, 20, 30]})
    report.plot_ppl_vs_removed(structured, tmp_path / "d.png", tmp_path / "d.pdf", "t")
    for name in "abcd":
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_bar_figure_has_one_bar_per_method_and_settings(tmp_path, monkeypatch):
    """Rows of one method and pattern that differ by their criterion settings (RIA with and without channel
    permutation) are two bars, labelled by their settings; the default's "-" adds nothing to its label."""
    df = pd.DataFrame({"method": ["dense", "ria", "ria"], "pattern": ["", "2:4", "2:4"], "sparsity": [0.0, 0.5, 0.5],
                       "settings": ["-", "-", "permutation=lsa"], "perplexity": [14.0, 90.0, 80.0]})
    seen = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, png, pdf: seen.update(
        bars=[b.get_height() for b in fig.axes[0].patches], labels=fig.axes[0].get_legend_handles_labels()[1]))
    report.plot_ppl_vs_sparsity(df, tmp_path / "a.png", tmp_path / "a.pdf", "t")
    assert seen["bars"] == [90.0, 80.0] and seen["labels"] == ["dense", "ria", "ria permutation=lsa"]


def test_rows_of_several_seeds_are_drawn_as_their_mean_and_range(tmp_path, monkeypatch):
    """A study over calibration seeds has several rows per method and pattern: one bar (or point) each, at their mean,
    with their range as the error bar (it once failed to draw: a bar of several heights)."""
    seeds = pd.DataFrame({"method": ["dense"] + ["wanda"] * 6, "pattern": [""] + ["0.5"] * 3 + ["2:4"] * 3,
                          "sparsity": [0.0] + [0.5] * 6, "perplexity": [14.0, 36.0, 37.0, 41.0, 130.0, 133.0, 136.0]})
    seen = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, png, pdf: seen.update(
        bars=[b.get_height() for b in fig.axes[0].patches],
        caps=sorted(round(y, 6) for line in fig.axes[0].lines for y in line.get_ydata() if line.get_marker() == "_")))
    report.plot_ppl_vs_sparsity(seeds, tmp_path / "a.png", tmp_path / "a.pdf", "t")
    assert seen["bars"] == [38.0, 133.0] and seen["caps"] == [36.0, 41.0, 130.0, 136.0]
    sweep = pd.DataFrame({"method": ["wanda"] * 4, "pattern": ["0.5", "0.5", "0.7", "0.7"], "sparsity": [0.5, 0.5, 0.7, 0.7],
                          "perplexity": [30.0, 40.0, 100.0, 300.0]})
    monkeypatch.setattr(report, "save_figure", lambda fig, png, pdf: seen.update(line=list(fig.axes[0].lines[0].get_ydata())))
    report.plot_ppl_vs_sparsity(sweep, tmp_path / "b.png", tmp_path / "b.pdf", "t")
    assert seen["line"] == [35.0, 200.0]


def test_perp_sweep_figure_has_one_panel_per_criterion(tmp_path, monkeypatch):
    df = _df()
    seen = {}
    original = report.save_figure

    def spy(fig, png, pdf):
        seen["panels"] = len(fig.axes)
        original(fig, png, pdf)

    monkeypatch.setattr(report, "save_figure", spy)
    report.plot_recovery(df, tmp_path / "e.png", tmp_path / "e.pdf", "t")
    assert seen["panels"] == 2  # magnitude, wanda
    report.plot_recovery(df[df.method != "magnitude"], tmp_path / "f.png", tmp_path / "f.pdf", "t")
    assert seen["panels"] == 1


def test_recovery_rows_name_the_optimiser_and_structured_rows_the_damping():
    summaries = [{}, *({"criterion": "wanda", "pattern": "u0.5", "sparsity": 0.5, "stream": "sequential", "recovery": spec,
                       "settings": {"optimizer": "adamw", "loss": "mse"}, "trainable_fraction": 0.01}
                      for spec in ("recon:matrix:pruned:all", "recon:matrix-adam:pruned:all", "recon:full:pruned:all",
                                   "retrain:norms"))]
    n = len(summaries)
    df = report.study_rows("m", [{"perplexity": 1.0}] * n, [{"overall": 0.5}] * n, summaries)
    assert list(df.optimiser) == ["-", "closed form", "adamw (mse)", "adamw (next-token)", "adamw (next-token)"]
    structured = report.structured_rows("m", [{"perplexity": 2.0}] * 3, [
        {"params_before": 10}, {"params_after": 8, "reconstruction": "liar", "damping": "auto", "damping_chosen": {"0.1": 3, "1": 1}},
        {"params_after": 8, "reconstruction": "bias", "damping": None}])
    assert list(structured.damping) == ["-", "auto", "-"] and structured.damping_chosen[1] == "0.1×3 1×1"


def test_structured_rows_size_the_dense_model_without_speed_results():
    """Without speed jobs, the dense row's size and each variant's removed share come from the variants'
    summaries (the dense model's own summary records no parameter count)."""
    rows = report.structured_rows("m", [{"perplexity": 2.0}] * 3, [
        {"variant": "dense"}, {"params_before": 10, "params_after": 8}, {"params_before": 10, "params_after": 6}])
    assert list(rows.params_m * 1e6) == pytest.approx([10, 8, 6])
    assert list(rows.removed_params_pct) == pytest.approx([0, 20, 40])
    assert "tokens_per_s" not in rows


def test_tables_in_three_formats_and_reference_labelled(tmp_path):
    df = report.study_rows(
        "m", [{"perplexity": 14.0}, {"perplexity": 38.0}], [{"overall": 0.0}, {"overall": 0.5}],
        [{}, {"criterion": "wanda", "pattern": "2of4", "sparsity": 0.5, "stream": "sequential", "prune_seconds": 3}],
        reference="wanda-llama7b",
    )
    assert list(df.pattern) == ["", "2:4"]
    assert list(df["LLaMA-7B ppl (Wanda paper)"]) == [5.68, 11.53]
    report.write_table(df, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    assert "Wanda paper" in (tmp_path / "t.md").read_text() and "\\begin{tabular}" in (tmp_path / "t.tex").read_text()
    assert pd.read_csv(tmp_path / "t.csv").perplexity.tolist() == [14.0, 38.0]


def test_zeroshot_columns_follow_variant_then_task_order():
    df = pd.DataFrame({"method": ["dense", "wanda"]})
    results = [{"task": "a", "acc": 0.6}, {"task": "b", "acc": 0.8}, {"task": "a", "acc": 0.4}, {"task": "b", "acc": 0.2}]
    out = report.add_zeroshot_columns(df, results)
    assert out.acc_a.tolist() == [0.6, 0.4] and out.acc_b.tolist() == [0.8, 0.2]
    assert out.acc_mean.round(6).tolist() == [0.7, 0.3]


def test_band_column_is_filled_from_a_bands_file_and_seed_spread_from_the_rows(tmp_path):
    """``band_pct`` comes from the bands file for the row's model, method, pattern, stream and calibration (none for
    a calibration it did not measure); a study pruned with several calibration seeds gets each row's spread over
    them from its own rows."""
    import json

    from pruneflow.report.claims import read_bands

    seeds = ["brown-n16-l256-s0", "brown-n16-l256-s1", "brown-n16-l256-s2"]
    summaries = [{}] + [{"criterion": m, "pattern": "2of4", "sparsity": 0.5, "stream": "sequential", "calibration": c}
                        for m in ("sparsegpt", "wanda") for c in seeds]
    ppl = [14.0, 90.0, 99.0, 95.0, 130.0, 140.0, 133.0]
    df = report.study_rows("m", [{"perplexity": p} for p in ppl], [{"overall": 0.5}] * len(ppl), summaries)
    bands = {"bands": [{"model": "m", "calibration": "brown-n16-l256-s0", "method": "sparsegpt", "pattern": "2:4",
                        "stream": "sequential", "band_pct": 7.5},
                       {"model": "m", "calibration": "brown-n16-l256-s0", "method": "wanda", "pattern": "2:4",
                        "stream": "sequential"}]}  # measured once: no band
    (tmp_path / "bands.json").write_text(json.dumps(bands))
    out = report.add_band_column(df, read_bands(tmp_path / "bands.json"))
    assert out.band_pct.tolist()[1] == 7.5 and out.band_pct.isna().tolist() == [True, False, True, True, True, True, True]
    assert out.seed_spread_pct.round(4).tolist()[1:] == [10.0] * 3 + [round(100 * (140 / 130 - 1), 4)] * 3
    assert out.seed_spread_pct.isna().tolist()[0]
    one_seed = report.study_rows("m", [{"perplexity": p} for p in ppl[:2]], [{"overall": 0.5}] * 2, summaries[:2])
    assert "seed_spread_pct" not in one_seed


def _zs(task, acc, acc_norm=None, n=10, n_total=10, **extra):
    row = {"task": task, "kind": "task", "acc": acc, "n": n, "n_total": n_total, "limited": n < n_total,
           "versions": {"lm_eval": "0.4.13", "transformers": "5.0", "torch": "2.13"}, **extra}
    return row | ({"acc_norm": acc_norm} if acc_norm is not None else {})


def test_zeroshot_columns_show_each_tasks_metric_a_groups_aggregate_and_a_tags_members():
    """zeroshot.metric picks acc_norm for one task; a group is one column (lm-eval's aggregate), a tag one per member;
    acc_mean is the mean of the shown columns; rows say which tasks were limited and which libraries scored them."""
    df = pd.DataFrame({"method": ["dense", "wanda"]})

    def tag(a, b):
        return {k: v for k, v in _zs("arc", 0, n=20, n_total=20).items() if k != "acc"} | {
            "kind": "tag", "subtasks": {"arc_easy": _zs("arc_easy", a, a / 2), "arc_challenge": _zs("arc_challenge", b, b / 2)}}

    def group(a):
        return _zs("mmlu", a, None, n=5, n_total=50) | {"kind": "group", "subtasks": {}}

    results = [_zs("hellaswag", 0.5, 0.7), tag(0.6, 0.3), group(0.4), _zs("hellaswag", 0.3, 0.4, n=4), tag(0.5, 0.2), group(0.2)]
    out = report.add_zeroshot_columns(df, results, {"hellaswag": "acc_norm", "arc_challenge": "acc_norm"})
    assert list(out.columns[1:]) == ["acc_norm_hellaswag", "acc_arc_easy", "acc_norm_arc_challenge", "acc_mmlu", "acc_mean",
                                     "zeroshot_limited", "zeroshot_versions"]
    assert out.acc_norm_hellaswag.tolist() == [0.7, 0.4] and out.acc_norm_arc_challenge.tolist() == [0.15, 0.1]
    assert out.acc_mean.round(6).tolist() == [round((0.7 + 0.6 + 0.15 + 0.4) / 4, 6), round((0.4 + 0.5 + 0.1 + 0.2) / 4, 6)]
    assert out.zeroshot_limited.tolist() == ["mmlu 5/50", "hellaswag 4/10; mmlu 5/50"]
    assert out.zeroshot_versions.tolist() == ["lm_eval 0.4.13, transformers 5.0, torch 2.13"] * 2


def test_zeroshot_columns_of_unlimited_results_add_no_limited_column_and_refuse_a_missing_metric():
    df = pd.DataFrame({"method": ["dense"]})
    out = report.add_zeroshot_columns(df, [{"task": "lastword", "acc": 0.4}])  # a result written before versions were
    assert "zeroshot_limited" not in out and out.zeroshot_versions.tolist() == ["unrecorded"]
    with pytest.raises(ValueError, match=r"zeroshot\.metric\.lastword: 'acc_norm' is not reported by task 'lastword'; allowed: acc"):
        report.add_zeroshot_columns(df, [{"task": "lastword", "acc": 0.4}], {"lastword": "acc_norm"})
