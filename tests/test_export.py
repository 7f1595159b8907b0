"""A study's export: readable folder names, and (slow) a small study exported by the workflow, every folder
loaded by transformers alone, its card's front matter and numbers checked against the evaluation results."""

import json
import re

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from pruneflow.report.model_card import export_record, parse_calibration, render_card
from pruneflow.spec.export_names import export_name, export_names
from pruneflow.spec.naming import recovery_variants, structured_variants, study_variants
from workflow_helpers import planned, snakemake, tiny_config, write_config

CALIB = {"corpus": "brown", "nsamples": 16, "seqlen": 256, "seed": 0}


# ------------------------------------------------------------------------------------------- names


def test_names_of_pruned_variants_spell_criterion_pattern_and_stream():
    study = {"criteria": ["wanda", "magnitude"], "patterns": [0.5, "2:4"], "stream": "sequential"}
    names = export_names(study_variants(study, CALIB), CALIB)
    assert list(names.values()) == ["dense", "wanda-0.5-sequential", "wanda-2of4-sequential", "magnitude-0.5", "magnitude-2of4"]
    owl = {"criteria": ["wanda"], "patterns": [0.7], "stream": "dense", "allocation": "owl", "owl_lambda": 0.1}
    assert export_name(study_variants(owl, CALIB)[1], CALIB) == "wanda-0.7-owl-m5-l0.1-dense-stream"


def test_names_of_recovered_variants_leave_out_defaults_and_the_settings_hash():
    config = {"calibration": CALIB, "reconstruction": {"lr": 1e-3}, "retraining": {"lr": 5e-4}}
    study = {"kind": "recovery", "criteria": ["wanda"], "patterns": [0.5], "recoveries": [
        "none", "recon:sublayer", "recon:matrix-adam", "recon:blocks:2", "recon:block:dense:norms", "recon:sublayer:dense:interleaved",
        "retrain:norms+masklora"]}
    names = export_names(recovery_variants(study, config), CALIB)
    assert list(names.values())[1:] == [
        "wanda-0.5-sequential", "wanda-0.5-sequential-recon-sublayer", "wanda-0.5-sequential-recon-matrix-adam",
        "wanda-0.5-sequential-recon-blocks2", "wanda-0.5-sequential-recon-block-dense-norms",
        "wanda-0.5-sequential-recon-sublayer-dense-interleaved", "wanda-0.5-sequential-retrain-norms-masklora"]


def test_names_of_structured_variants_and_calibration_seeds():
    study = {"kind": "structured", "criteria": ["fluctuation"], "targets": ["neurons", "heads"], "ratios": [0.2],
             "reconstructions": ["none", "liar", "liar:0.3"]}
    names = list(export_names(structured_variants(study, CALIB), CALIB).values())
    assert names[1:] == ["fluctuation-neurons-0.2-none", "fluctuation-neurons-0.2-liar", "fluctuation-neurons-0.2-liar-damping0.3",
                         "fluctuation-heads-0.2-none", "fluctuation-heads-0.2-liar", "fluctuation-heads-0.2-liar-damping0.3"]
    seeds = {"criteria": ["wanda"], "patterns": [0.5], "calibration_seeds": [0, 1]}
    assert list(export_names(study_variants(seeds, CALIB), CALIB).values()) == ["dense", "wanda-0.5-sequential",
                                                                                "wanda-0.5-sequential-seed1"]


def test_two_variants_on_one_name_fail_naming_both():
    with pytest.raises(ValueError, match="pruned/a-n1-l2-s0/wanda-u0.5-seq.*pruned/b-n1-l2-s0/wanda-u0.5-seq"):
        export_names(["pruned/a-n1-l2-s0/wanda-u0.5-seq", "pruned/b-n1-l2-s0/wanda-u0.5-seq"], CALIB)


def test_calibration_ids_parse_back():
    assert parse_calibration("c4-web-n128-l2048-s3") == {"corpus": "c4-web", "nsamples": 128, "seqlen": 2048, "seed": 3,
                                                         "protocol": "pruneflow"}
    assert parse_calibration("c4-n128-l2048-s0-ref")["protocol"] == "reference"  # the papers' protocol
    assert parse_calibration("none") is None


# ------------------------------------------------------------------------------------------- a card


def _front_matter(card: str) -> dict:
    m = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert m, card[:300]
    return yaml.safe_load(m.group(1))


def _card_value(card: str, label: str) -> float:
    """The model's column of the card's evaluation row starting with ``label``."""
    row = next(line for line in card.splitlines() if line.startswith(f"| {label}"))
    return float(row.split("|")[2])


def test_a_recovered_variants_card_names_its_recovery_its_calibrations_and_every_metric():
    variant = "recovered/brown-n4-l64-s0/wanda-u0.5-seq/c4-n8-l32-s1/recon-sublayer-pruned-all-d446d92e"
    summary = {"criterion": "wanda", "pattern": "u0.5", "sparsity": 0.5, "stream": "sequential", "calibration": "brown-n4-l64-s0",
               "recovery": "recon:sublayer:pruned:all", "settings": {"optimizer": "adamw", "lr": 0.001}, "trainable_params": 7}
    sparsity = {"overall": 0.5, "zeros": 6, "numel": 12, "requested": 0.5,
                "per_matrix": {"0.mlp.up_proj": {"zeros": 6, "numel": 12, "sparsity": 0.5}}}
    ppl = {"perplexity": 12.3456, "corpus": "wiki", "windows": 4, "seqlen": 64, "bos": "auto", "seconds": 3.0, "sparsity": sparsity}
    zeroshot = [{"task": "hellaswag", "acc": 0.25, "acc_norm": 0.3125, "n": 16, "seconds": 2.0}]
    record = export_record(name="x", variant=variant, model="m", base_model="org/m", study="s", summary=summary, sparsity=sparsity,
                           facts={"parameters": 100, "dtype": "bfloat16"}, dense_parameters=100, ppl=ppl, zeroshot=zeroshot,
                           dense_ppl={**ppl, "perplexity": 10.0}, dense_zeroshot=[{**zeroshot[0], "acc_norm": 0.5}],
                           commit="abc", versions={"torch": "1"})
    assert record["calibration"] == {"corpus": "brown", "nsamples": 4, "seqlen": 64, "seed": 0, "protocol": "pruneflow"}
    assert record["recovery"]["calibration"] == {"corpus": "c4", "nsamples": 8, "seqlen": 32, "seed": 1, "protocol": "pruneflow"}
    assert record["evaluation"]["perplexity"] == {"perplexity": 12.3456, "corpus": "wiki", "windows": 4, "seqlen": 64, "bos": "auto"}
    assert record["speed"] is None and record["method"]["pattern"] == "0.5"
    card = render_card(record)
    assert _front_matter(card)["base_model"] == "org/m"
    assert "| recovery | `recon:sublayer:pruned:all` (optimizer adamw, lr 0.001), on c4, 8 samples × 32 tokens, seed 1 |" in card
    assert _card_value(card, "perplexity") == 12.35 and _card_value(card, "hellaswag acc_norm") == 0.3125
    assert "| hellaswag acc_norm (16 items) | 0.3125 | 0.5000 |" in card and "| dtype | bfloat16 |" in card


# ------------------------------------------------------------------------------------------- a study, exported


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    workdir = tmp_path_factory.mktemp("export")
    config = tiny_config(tiny_model_dir)
    config["studies"] = {
        "wanda": {"criteria": ["wanda"], "patterns": [0.5, "2:4"], "stream": "sequential", "zeroshot": True},
        "liar": {"kind": "structured", "criteria": ["fluctuation"], "targets": ["neurons"], "ratios": [0.25],
                 "reconstructions": ["liar"], "damping": 0.1, "speed": True},
    }
    write_config(workdir, config)
    assert "export_study" not in planned(workdir)[0]  # on demand only
    snakemake(workdir, "results/export/wanda", "results/export/liar")
    return workdir


STUDIES = {"wanda": ["wanda-0.5-sequential", "wanda-2of4-sequential"], "liar": ["fluctuation-neurons-0.25-liar-damping0.1"]}


@pytest.mark.slow
@pytest.mark.parametrize("study", list(STUDIES))
def test_every_folder_loads_alone_with_a_card_whose_numbers_are_the_evaluations(exported, tiny_model_dir, study):
    root = exported / "results/export" / study
    index = pd.read_csv(root / "index.csv")
    assert list(index.folder) == STUDIES[study]
    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for row in index.itertuples():
        folder = root / row.folder
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        assert AutoTokenizer.from_pretrained(folder)("a b").input_ids
        record = json.loads((folder / "pruneflow.json").read_text())
        card = (folder / "README.md").read_text()
        meta = _front_matter(card)
        structured = study == "liar"
        assert meta["base_model"] == "tiny" and meta["library_name"] == "transformers"
        assert {"pruneflow", "pruned", record["method"]["criterion"], "structured" if structured else "sparse"} <= set(meta["tags"])

        evaluation = json.loads((exported / f"results/tiny/eval/{row.variant}/ppl-wiki-l64-w4-bosauto.json").read_text())
        assert record["evaluation"]["perplexity"]["perplexity"] == evaluation["perplexity"] == row.perplexity
        assert _card_value(card, "perplexity") == round(evaluation["perplexity"], 2)
        if study == "wanda":
            zs = json.loads((exported / f"results/tiny/eval/{row.variant}/zeroshot-lastword-n8-s0.json").read_text())
            assert record["evaluation"]["zeroshot"]["lastword"]["acc"] == zs["acc"]
            assert _card_value(card, "lastword acc") == round(zs["acc"], 4)
        else:
            assert "Zero-shot accuracy was not evaluated" in card

        # zeros as loaded, per pruned matrix: the variant's measured sparsity (as its evaluation carried it)
        per_matrix = evaluation["sparsity"]["per_matrix"]
        for key, measured in per_matrix.items():
            block, name = key.split(".", 1)
            weight = model.model.layers[int(block)].get_submodule(name).weight
            assert int((weight == 0).sum()) == measured["zeros"] and weight.numel() == measured["numel"], key
        assert record["sparsity"]["measured"] == evaluation["sparsity"]["overall"]
        if not structured:
            assert record["sparsity"]["measured"] == pytest.approx(0.5, abs=1 / 64)

        params = sum(p.numel() for p in model.parameters())
        dense_params = sum(p.numel() for p in dense.parameters())
        assert record["parameters"] == params
        if structured:
            assert model.config.intermediate_size < dense.config.intermediate_size and params < dense_params
            speed = json.loads((exported / f"results/tiny/eval/{row.variant}/speed-l256.json").read_text())
            dense_speed = json.loads((exported / "results/tiny/eval/dense/speed-l256.json").read_text())
            assert record["speed"]["tokens_per_second"] == speed["tokens_per_second"] == row.tokens_per_second
            assert record["speed"]["dense_tokens_per_second"] == dense_speed["tokens_per_second"]
            assert f"{speed['tokens_per_second']:.1f} tokens/s against {dense_speed['tokens_per_second']:.1f}" in card
        else:
            assert params == dense_params and model.config.intermediate_size == dense.config.intermediate_size
        assert record["recovery"] is None and "| recovery | none |" in card
        with torch.no_grad():
            assert torch.isfinite(model(torch.tensor([[1, 5, 9]])).logits).all()


@pytest.mark.slow
def test_export_is_up_to_date_after_it_ran(exported):
    assert planned(exported, "results/export/wanda", "results/export/liar")[0] == {}


def test_a_reference_protocol_calibration_names_its_seed_like_any_other():
    calibration = {"corpus": "c4", "nsamples": 128, "seqlen": 2048, "seed": 0}
    names = export_names(["pruned/c4-n128-l2048-s0-ref/wanda-u0.5-seq", "pruned/c4-n128-l2048-s1-ref/wanda-u0.5-seq"],
                         calibration)
    assert list(names.values()) == ["wanda-0.5-sequential", "wanda-0.5-sequential-seed1"]
