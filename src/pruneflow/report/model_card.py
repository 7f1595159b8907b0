"""The record and model card of an exported variant: how it was made, what it scored, what made it.

:func:`export_record` gathers one variant's facts from what the workflow already wrote (its ``summary.json``
and ``sparsity.json``, its evaluation results, the dense model's, speed results where the study measured
them); :func:`render_card` turns the record into a Hugging Face model card (``README.md``: YAML front matter,
then a short body). The record itself is written beside it as ``pruneflow.json``, so the card's numbers and
the JSON's are the same values.
"""

from __future__ import annotations

import re
import subprocess
from importlib import metadata

import yaml

from pruneflow.spec import registry
from pruneflow.spec.naming import parse_calib_id

PACKAGES = ("pruneflow", "torch", "transformers", "lm_eval")
NOT_MEASURED = "not measured: the study sets no `speed: true`"
_EVAL_ONLY = ("summary", "sparsity", "seconds", "variant")  # what an evaluation result carries beside its numbers


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that made and evaluated a variant ("unknown" where not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = _module_version(name)
    return out


def _module_version(name: str) -> str:
    try:
        module = __import__(name)
    except ImportError:
        return "unknown"
    return str(getattr(module, "__version__", "unknown"))


def git_describe(folder) -> str:
    """``git describe --always --dirty --tags`` of the checkout holding ``folder``, or "unknown"."""
    try:
        proc = subprocess.run(["git", "-C", str(folder), "describe", "--always", "--dirty", "--tags"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def parse_calibration(calib: str | None) -> dict | None:
    """``brown-n16-l256-s0`` → {corpus, nsamples, seqlen, seed, protocol}; ``none`` (a method without calibration) →
    None (:func:`pruneflow.spec.naming.parse_calib_id`)."""
    return None if calib in (None, "none") else parse_calib_id(calib)


def _evaluation(ppl: dict, zeroshot: list[dict]) -> dict:
    return {
        "perplexity": {k: v for k, v in ppl.items() if k not in _EVAL_ONLY},
        "zeroshot": {z["task"]: {k: v for k, v in z.items() if k not in ("task", "seconds")} for z in zeroshot},
    }


def _method(variant: str, summary: dict) -> dict:
    kind = variant.split("/", 1)[0]
    if kind == "structured":
        return {"kind": "structured", "criterion": summary["criterion"], "target": summary["target"], "ratio": summary["ratio"],
                "reconstruction": summary["reconstruction"], "damping": summary.get("damping"),
                "config": summary.get("config", {})}
    token = summary["pattern"]
    nm = re.fullmatch(r"(\d+)of(\d+)", token)
    method = {"kind": "n:m" if nm else "unstructured", "criterion": summary["criterion"],
              "pattern": f"{nm.group(1)}:{nm.group(2)}" if nm else f"{summary['sparsity']:g}",
              "requested_sparsity": summary["sparsity"], "stream": summary.get("stream")}
    if summary.get("criterion_settings"):
        method["settings"] = summary["criterion_settings"]
    if summary.get("refinement"):
        method["refinement"] = {"kind": summary["refinement"], **summary.get("refinement_settings", {})}
    if summary.get("allocation"):
        study_keys = registry.get("allocation", summary["allocation"]).options.get("study_keys", {})
        settings = summary.get("allocation_settings") or {param: summary.get(key) for key, param in study_keys.items()}
        method["allocation"] = {"kind": summary["allocation"], **settings}
    return method


def _recovery(variant: str, summary: dict) -> dict | None:
    if not summary.get("recovery"):
        return None
    return {"spec": summary["recovery"], "settings": summary.get("settings", {}),
            "calibration": parse_calibration(variant.split("/")[3]), "trainable_params": summary.get("trainable_params")}


def _speed(structured: bool, speed: dict | None, dense_speed: dict | None) -> dict | None:
    if not structured:
        return None
    if speed is None or dense_speed is None:
        return {"measured": False, "why": NOT_MEASURED}
    return {"measured": True, "tokens_per_second": speed["tokens_per_second"],
            "dense_tokens_per_second": dense_speed["tokens_per_second"],
            "speedup": speed["tokens_per_second"] / dense_speed["tokens_per_second"],
            "threads": speed.get("threads"), "placement": speed.get("placement"), "note": speed.get("note", "")}


def export_record(*, name: str, variant: str, model: str, base_model: str, study: str, summary: dict, sparsity: dict,
                  facts: dict, dense_parameters: int, ppl: dict, zeroshot: list[dict], dense_ppl: dict,
                  dense_zeroshot: list[dict], speed: dict | None = None, dense_speed: dict | None = None,
                  commit: str = "unknown", versions: dict | None = None) -> dict:
    """One exported variant's record (what ``pruneflow.json`` holds and the card shows).

    ``summary``/``sparsity``: the variant's ``summary.json``/``sparsity.json``; ``facts``: what writing the folder
    found ({parameters, dtype}); ``ppl``, ``zeroshot``: its evaluation results (zero-shot: one per task, [] when
    the study evaluates none), ``dense_*`` the dense model's; ``speed``/``dense_speed``: the study's speed results
    (structured studies with ``speed: true``), else None."""
    structured = variant.startswith("structured/")
    return {
        "name": name, "variant": variant, "model": model, "base_model": base_model, "study": study,
        "method": _method(variant, summary),
        "sparsity": {"measured": sparsity["overall"], "zeros": sparsity["zeros"], "numel": sparsity["numel"],
                     "requested": sparsity.get("requested"),
                     "per_matrix": {k: m["sparsity"] for k, m in sparsity["per_matrix"].items()}},
        "calibration": parse_calibration(summary.get("calibration")),
        "recovery": _recovery(variant, summary),
        "dtype": facts["dtype"],
        "parameters": facts["parameters"], "dense_parameters": dense_parameters,
        "storage": "physically smaller (heads or FFN neurons removed)" if structured else "dense tensors, pruned weights stored as zeros",
        "evaluation": _evaluation(ppl, zeroshot),
        "dense_evaluation": _evaluation(dense_ppl, dense_zeroshot),
        "speed": _speed(structured, speed, dense_speed),
        "commit": commit,
        "versions": versions if versions is not None else package_versions(),
    }


# ------------------------------------------------------------------------------------------- the card


def card_metadata(record: dict) -> dict:
    """The card's YAML front matter (the Hub reads these keys)."""
    method = record["method"]
    tags = ["pruneflow", "pruned", method["criterion"], "structured" if method["kind"] == "structured" else "sparse"]
    if method["kind"] == "structured" and method["reconstruction"] != "none":
        tags.append(method["reconstruction"])
    return {"base_model": record["base_model"], "library_name": "transformers", "pipeline_tag": "text-generation",
            "tags": list(dict.fromkeys(tags))}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _method_line(method: dict) -> str:
    if method["kind"] == "structured":
        what = {"heads": "attention heads", "neurons": "FFN neurons", "both": "attention heads and FFN neurons"}[method["target"]]
        repair = method["reconstruction"] + (f" (damping {method['damping']})" if method.get("damping") is not None else "")
        return f"{method['criterion']}: {_pct(method['ratio'])} of the {what} removed, output projections repaired by {repair}"
    line = f"{method['criterion']}" + (f", {method['stream']} calibration stream" if method.get("stream") else "")
    if method.get("settings"):
        line += " (" + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in method["settings"].items()) + ")"
    if method.get("refinement"):
        line += f", mask refined by {method['refinement']['kind']}"
    if method.get("allocation"):
        a = dict(method["allocation"])
        kind = a.pop("kind")
        line += f", {kind} allocation (" + ", ".join(f"{k} {v:g}" for k, v in a.items()) + ")"
    return line


def _pattern_line(method: dict) -> str:
    if method["kind"] == "structured":
        changed = ", ".join(f"{k} {v}" for k, v in sorted(method["config"].items())) or "no config change"
        return f"whole units removed ({changed})"
    if method["kind"] == "n:m":
        n, m = method["pattern"].split(":")
        return f"{method['pattern']} ({n} of every {m} consecutive weights along the input dimension kept)"
    return f"unstructured, {_pct(method['requested_sparsity'])} of every prunable matrix"


def _calibration_line(c: dict | None) -> str:
    if c is None:
        return "none (the method needs no calibration data)"
    protocol = ", sampled as the Wanda/SparseGPT reference code does" if c.get("protocol") == "reference" else ""
    return f"{c['corpus']}, {c['nsamples']} samples × {c['seqlen']} tokens, seed {c['seed']}{protocol}"


def _recovery_line(r: dict | None) -> str:
    if r is None:
        return "none"
    s = r["settings"]
    opt = ", ".join(f"{k} {s[k]}" for k in ("optimizer", "lr", "steps", "batch_size", "loss", "damping") if k in s)
    return f"`{r['spec']}`" + (f" ({opt})" if opt else "") + (f", on {_calibration_line(r['calibration'])}" if r.get("calibration") else "")


def _num(x, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _evaluation_rows(record: dict) -> list[str]:
    ours, dense = record["evaluation"], record["dense_evaluation"]
    p = ours["perplexity"]
    rows = [f"| perplexity ({p['corpus']}, {p['windows']} windows × {p['seqlen']} tokens, BOS {p.get('bos')}) "
            f"| {_num(p['perplexity'], 2)} | {_num(dense['perplexity']['perplexity'], 2)} |"]
    for task, z in ours["zeroshot"].items():
        d = dense["zeroshot"].get(task, {})
        for metric in ("acc", "acc_norm"):
            if metric in z:
                rows.append(f"| {task} {metric} ({z.get('n', '?')} items) | {_num(z[metric], 4)} | {_num(d.get(metric), 4)} |")
    return rows


def _speed_lines(speed: dict | None) -> list[str]:
    if speed is None:
        return []
    if not speed["measured"]:
        return ["", "## Speed", "", f"Tokens/s {speed['why']}."]
    where = f", {speed['threads']} threads" if speed.get("threads") else ""
    return ["", "## Speed", "",
            f"Forward throughput: {speed['tokens_per_second']:.1f} tokens/s against {speed['dense_tokens_per_second']:.1f} "
            f"for the dense model ({speed['speedup']:.2f}×), measured by PruneFlow's speed job on the same machine{where}."
            + (f" {speed['note']}." if speed.get("note") else "")]


def render_card(record: dict) -> str:
    """The Hugging Face model card (``README.md``) of an exported variant."""
    method, sparsity = record["method"], record["sparsity"]
    structured = method["kind"] == "structured"
    measured = (f"{_pct(sparsity['measured'])} of the prunable matrices' weights are zero "
                f"({sparsity['zeros']:,} of {sparsity['numel']:,})")
    params = f"{record['parameters']:,} (dense: {record['dense_parameters']:,}, " \
             f"{_pct(1 - record['parameters'] / record['dense_parameters'])} fewer)" if structured else f"{record['parameters']:,}"
    front = yaml.safe_dump(card_metadata(record), sort_keys=False, allow_unicode=True)
    lines = [
        "---", front.rstrip("\n"), "---", "",
        f"# {record['name']}", "",
        f"`{record['base_model']}` pruned by PruneFlow (study `{record['study']}`, variant "
        f"`{record['variant']}`). It loads with `AutoModelForCausalLM.from_pretrained` alone; "
        + ("its weights are physically fewer." if structured else "pruned weights are stored as zeros in dense tensors."),
        "",
        "| | |", "|---|---|",
        f"| method | {_method_line(method)} |",
        f"| pattern | {_pattern_line(method)} |",
        f"| measured sparsity | {measured} |",
        f"| parameters | {params} |",
        f"| calibration | {_calibration_line(record['calibration'])} |",
        f"| recovery | {_recovery_line(record['recovery'])} |",
        f"| dtype | {record['dtype']} |",
        "", "## Evaluation", "",
        "| | this model | dense |", "|---|---|---|",
        *_evaluation_rows(record),
    ]
    if not record["evaluation"]["zeroshot"]:
        lines += ["", "Zero-shot accuracy was not evaluated: the study sets no `zeroshot: true`."]
    lines += _speed_lines(record["speed"])
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    lines += ["", "## Provenance", "", f"PruneFlow commit `{record['commit']}`; {versions}. "
              "The same record, with every matrix's sparsity, is in `pruneflow.json`.", ""]
    return "\n".join(lines)


def index_row(record: dict) -> dict:
    """One row of a study's export index (index.csv)."""
    method, ev = record["method"], record["evaluation"]
    row = {"folder": record["name"], "variant": record["variant"], "method": method["criterion"],
           "pattern": method.get("pattern") or f"{method['target']} {method['ratio']:g}",
           "recovery": record["recovery"]["spec"] if record["recovery"] else "none",
           "measured_sparsity": record["sparsity"]["measured"], "parameters": record["parameters"], "dtype": record["dtype"],
           "perplexity": ev["perplexity"]["perplexity"],
           "dense_perplexity": record["dense_evaluation"]["perplexity"]["perplexity"]}
    row |= {f"acc_{task}": z.get("acc") for task, z in ev["zeroshot"].items()}
    speed = record["speed"]
    if speed is not None:
        row["tokens_per_second"] = speed.get("tokens_per_second")
        row["dense_tokens_per_second"] = speed.get("dense_tokens_per_second")
    return row

