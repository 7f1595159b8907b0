"""A study's variants exported as Hugging Face folders, each with its model card, and an index.

``plan`` (built by the workflow from the study) names, per variant, its folder, its readable name, its
evaluation results and speed result; the dense model's results are the cards' reference. One variant is
held in memory at a time, whole (``save_pretrained`` needs it): the export needs what one variant's export
needs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pruneflow.core.artifacts import load_json
from pruneflow.core.atomic import write_json
from pruneflow.core.writer import write_hf_folder
from pruneflow.report.model_card import export_record, index_row, package_versions, render_card

INDEX = "index.csv"


def _results(entry: dict) -> tuple[dict, list[dict], dict | None]:
    speed = entry.get("speed")
    return load_json(entry["ppl"]), [load_json(p) for p in entry.get("zeroshot", [])], load_json(speed) if speed else None


def export_study(plan: dict, out, commit: str = "unknown") -> list[dict]:
    """Write every variant of ``plan["variants"]`` into ``out/<name>/`` (weights, tokenizer, ``README.md``,
    ``pruneflow.json``) and ``out/index.csv``; return the records.

    ``plan``: {model, base_model, study, dense: {ppl, zeroshot, speed?}, variants: [{variant, name, folder, ppl,
    zeroshot, speed?}]} (paths to the results; ``speed`` only where the study measured it)."""
    out = Path(out)
    dense_ppl, dense_zeroshot, dense_speed = _results(plan["dense"])
    versions = package_versions()
    records = []
    for entry in plan["variants"]:
        ppl, zeroshot, speed = _results(entry)
        target = out / entry["name"]
        target.mkdir()
        facts = write_hf_folder(entry["folder"], target)
        summary = load_json(Path(entry["folder"]) / "summary.json")
        record = export_record(
            name=entry["name"], variant=entry["variant"], model=plan["model"], base_model=plan["base_model"],
            study=plan["study"], summary=summary, sparsity=load_json(Path(entry["folder"]) / "sparsity.json"), facts=facts,
            dense_parameters=summary.get("params_before", facts["parameters"]),  # only structured pruning changes the count
            ppl=ppl, zeroshot=zeroshot, dense_ppl=dense_ppl, dense_zeroshot=dense_zeroshot,
            speed=speed, dense_speed=dense_speed if speed else None, commit=commit, versions=versions)
        write_json(target / "pruneflow.json", record)
        (target / "README.md").write_text(render_card(record))
        records.append(record)
    pd.DataFrame([index_row(r) for r in records]).to_csv(out / INDEX, index=False)
    return records
