import pytest

from pruneflow.spec.naming import (
    make_method,
    parse_method_id,
    parse_ppl_name,
    parse_recovery,
    ppl_name,
    recovery_settings,
    recovery_variants,
    study_variants,
)

CAL = {"corpus": "brown", "nsamples": 32, "seqlen": 256, "seed": 0}


@pytest.mark.parametrize("criterion, pattern, stream, expected", [
    ("wanda", 0.5, "sequential", "wanda-u0.5-seq"),
    ("wanda", "2:4", "dense", "wanda-2of4-dense"),
    ("magnitude", 0.7, "sequential", "magnitude-u0.7"),  # no calibration, no stream
])
def test_method_ids_round_trip(criterion, pattern, stream, expected):
    method = make_method(criterion, pattern, stream)
    assert method.id == expected
    assert parse_method_id(expected) == method


def test_ids_spell_their_parameters():
    spec = {"corpus": "wiki", "seqlen": 512, "windows": 16, "bos": False}
    assert parse_ppl_name(ppl_name(spec)) == spec


def test_study_variants_put_dense_first_and_share_calibration_only_where_needed():
    study = {"criteria": ["magnitude", "wanda"], "patterns": [0.5, "2:4"]}
    assert study_variants(study, CAL) == [
        "dense",
        "pruned/none/magnitude-u0.5",
        "pruned/none/magnitude-2of4",
        "pruned/brown-n32-l256-s0/wanda-u0.5-seq",
        "pruned/brown-n32-l256-s0/wanda-2of4-seq",
    ]


def test_calibration_seeds_prune_each_method_once_per_seed():
    """``calibration_seeds`` replaces calibration.seed: one variant per seed for a method that reads calibration,
    one for a method that reads none (magnitude)."""
    study = {"criteria": ["magnitude", "wanda"], "patterns": ["2:4"], "calibration_seeds": [0, 3]}
    assert study_variants(study, CAL) == [
        "dense",
        "pruned/none/magnitude-2of4",
        "pruned/brown-n32-l256-s0/wanda-2of4-seq",
        "pruned/brown-n32-l256-s3/wanda-2of4-seq",
    ]


@pytest.mark.parametrize("text, spec", [
    ("retrain:norms", "retrain:norms"),
    ("retrain:norms+masklora", "retrain:norms+masklora"),
    ("recon:sublayer", "recon:sublayer:pruned:all"),
    ("recon:blocks:2:dense", "recon:blocks:2:dense:all"),
    ("recon:block:pruned:norms+scalelora", "recon:block:pruned:norms+scalelora"),
])
def test_recovery_specs_parse(text, spec):
    assert parse_recovery(text).spec == spec
    assert parse_recovery(parse_recovery(text).spec) == parse_recovery(text)


@pytest.mark.parametrize("text, message", [
    ("retrain:masklora+scalelora", "at most one adapter"),
    ("retrain:weights", "trainable 'weights' is not allowed"),
    ("recon:layer", "granularity 'layer' is not allowed; allowed: matrix"),
    ("recon:sublayer:noisy", "inputs 'noisy' is not allowed; allowed: pruned, dense"),
    ("finetune", "allowed: none, retrain:"),
])
def test_bad_recovery_specs_name_the_value(text, message):
    with pytest.raises(ValueError, match=message):
        parse_recovery(text)


def test_recovery_id_changes_with_its_settings_only():
    rec = parse_recovery("recon:sublayer")
    base = {"calibration": CAL, "reconstruction": {"lr": 1e-3}, "retraining": {"lr": 5e-4}}
    token = rec.token(recovery_settings(rec, base))
    assert token.startswith("recon-sublayer-pruned-all-")
    assert rec.token(recovery_settings(rec, {**base, "retraining": {"lr": 1.0}})) == token
    assert rec.token(recovery_settings(rec, {**base, "reconstruction": {"lr": 2e-3}})) != token
    study = {"criteria": ["wanda"], "patterns": [0.5], "recoveries": ["none", "recon:sublayer"]}
    assert recovery_variants(study, base) == [
        "dense",
        "pruned/brown-n32-l256-s0/wanda-u0.5-seq",
        f"recovered/brown-n32-l256-s0/wanda-u0.5-seq/brown-n32-l256-s0/{token}",
    ]


def test_lineage_and_the_jobs_whose_costs_a_variant_carries():
    from pruneflow.spec.naming import making_steps, variant_lineage

    recovered = "recovered/c/wanda-u0.5-dense/c/recon-sublayer-pruned-all-abcd1234"
    assert variant_lineage(recovered) == [recovered, "pruned/c/wanda-u0.5-dense", "dense"]
    assert variant_lineage("structured/c/fluctuation-neurons0.2-none") == ["structured/c/fluctuation-neurons0.2-none", "dense"]
    assert making_steps(recovered) == {"prune": ["acts/c", "pruned/c/wanda-u0.5-dense"], "recover": [recovered]}
    assert making_steps("pruned/c/wanda-u0.5-seq") == {"prune": ["pruned/c/wanda-u0.5-seq"], "recover": []}
    assert making_steps("dense") == {"prune": [], "recover": []}


def test_variant_costs_sum_seconds_and_take_the_peak_memory(tmp_path):
    from pruneflow.report.tables import read_benchmark, variant_costs

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for name, seconds, rss in (("a", 10.5, 900.0), ("b", 2.25, 1200.0), ("r", 30.0, 1600.0)):
        (tmp_path / f"{name}.tsv").write_text(header + f"{seconds}\t0:00:10\t{rss}\t0\t0\t0\t0\t0\t0\t0\n")
    bench = {str(tmp_path / f"{n}.tsv"): read_benchmark(tmp_path / f"{n}.tsv") for n in "abr"}
    steps = {"prune": [str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")], "recover": [str(tmp_path / "r.tsv")]}
    assert variant_costs(steps, bench) == {
        "prune_seconds": 12.75, "peak_memory_mb": 1200.0, "recover_seconds": 30.0, "recover_peak_memory_mb": 1600.0,
    }
    assert variant_costs({"prune": [], "recover": []}, bench) == {"prune_seconds": 0.0}


def test_owl_method_ids_spell_the_allocation_and_uniform_ids_do_not_change():
    from pruneflow.spec.naming import allocation_artifact, making_steps, parse_allocation_id

    owl = make_method("wanda", 0.7, "sequential", {"name": "owl", "m": 5, "lam": 0.08})
    assert owl.id == "wanda-u0.7-owl-m5-l0.08-seq" and parse_method_id(owl.id) == owl
    magnitude = make_method("magnitude", 0.7, "dense", {"name": "owl", "m": 3.0, "lam": 0.1})
    assert magnitude.id == "magnitude-u0.7-owl-m3-l0.1" and parse_method_id(magnitude.id) == magnitude
    assert allocation_artifact(owl, "c") == "allocation/c/owl-m5-l0.08-u0.7"
    assert parse_allocation_id("owl-m5-l0.08-u0.7") == (owl.allocation, 0.7)
    assert owl.allocation.settings == {"m": 5.0, "lam": 0.08}
    study = {"criteria": ["magnitude", "wanda"], "patterns": [0.6, 0.7], "stream": "dense", "allocation": ["uniform", "owl"]}
    calib = "brown-n32-l256-s0"
    assert study_variants(study, CAL) == [
        "dense",
        "pruned/none/magnitude-u0.6", "pruned/none/magnitude-u0.7",  # uniform: the paths they always had
        f"pruned/{calib}/magnitude-u0.6-owl-m5-l0.08", f"pruned/{calib}/magnitude-u0.7-owl-m5-l0.08",  # OWL needs calibration
        f"pruned/{calib}/wanda-u0.6-dense", f"pruned/{calib}/wanda-u0.7-dense",
        f"pruned/{calib}/wanda-u0.6-owl-m5-l0.08-dense", f"pruned/{calib}/wanda-u0.7-owl-m5-l0.08-dense",
    ]
    # costs: an OWL variant pays the activation cache and its allocation, whichever stream prunes it
    assert making_steps(f"pruned/{calib}/wanda-u0.7-owl-m5-l0.08-seq")["prune"] == [
        f"acts/{calib}", f"allocation/{calib}/owl-m5-l0.08-u0.7", f"pruned/{calib}/wanda-u0.7-owl-m5-l0.08-seq"]
    assert making_steps(f"pruned/{calib}/wanda-u0.7-seq")["prune"] == [f"pruned/{calib}/wanda-u0.7-seq"]
    assert making_steps(f"pruned/{calib}/wanda-u0.7-dense")["prune"] == [f"acts/{calib}", f"pruned/{calib}/wanda-u0.7-dense"]


def test_owl_parameter_lists_are_a_cross_product():
    from pruneflow.spec.naming import study_allocations

    study = {"allocation": ["uniform", "owl"], "owl_m": [3, 5], "owl_lambda": 0.05}
    assert [a.token if a else "uniform" for a in study_allocations(study)] == ["uniform", "owl-m3-l0.05", "owl-m5-l0.05"]


def test_a_recovered_owl_variant_lives_under_its_owl_parent():
    from pruneflow.spec.naming import variant_lineage

    study = {"criteria": ["wanda"], "patterns": [0.7], "allocation": "owl", "recoveries": ["none", "recon:sublayer"]}
    config = {"calibration": CAL, "reconstruction": {"lr": 1e-3}}
    pruned, recovered = recovery_variants(study, config)[1:]
    assert pruned == "pruned/brown-n32-l256-s0/wanda-u0.7-owl-m5-l0.08-seq"
    assert variant_lineage(recovered)[1:] == [pruned, "dense"]  # masks inherited from the OWL variant


def test_each_recovery_hashes_only_the_settings_it_reads():
    from pruneflow.recover.train import TrainConfig
    from pruneflow.spec.naming import recovery_settings
    from pruneflow.spec.recovery import OPTIMISER_KEYS

    assert set(OPTIMISER_KEYS) == set(TrainConfig.__dataclass_fields__)
    config = {"reconstruction": {"lr": 1e-3, "damping": 0.01, "rank": 8, "targets": "same"},
              "retraining": {"lr": 5e-4, "rank": 16, "alpha": 32}}
    settings = {spec: recovery_settings(parse_recovery(spec), config) for spec in
                ["recon:matrix", "recon:sublayer", "recon:sublayer:pruned:masklora", "retrain:norms", "retrain:norms+scalelora"]}
    assert [s for s in settings if "damping" in settings[s]] == ["recon:matrix"]
    assert "lr" not in settings["recon:matrix"] and settings["recon:sublayer"]["lr"] == 1e-3
    assert [s for s in settings if "rank" in settings[s]] == ["recon:sublayer:pruned:masklora", "retrain:norms+scalelora"]


def test_structured_ids_keep_their_spelling_and_round_trip():
    """Every criterion × reconstruction spelling a study can write, as the ids were before the registry read them."""
    from pruneflow.spec.naming import parse_structured_id, structured_variants

    study = {"kind": "structured", "criteria": ["magnitude", "wanda", "fluctuation"], "targets": ["heads", "both"], "ratios": [0.2],
             "reconstructions": ["none", "bias", "liar", "liar:0", "liar_weight", "liar_weight:0.3"], "damping": ["auto", 1e-3]}
    variants = structured_variants(study, CAL)
    assert variants[:9] == ["dense", "structured/none/magnitude-heads0.2-none", "structured/brown-n32-l256-s0/magnitude-heads0.2-bias",
                            "structured/brown-n32-l256-s0/magnitude-heads0.2-liarauto", "structured/brown-n32-l256-s0/magnitude-heads0.2-liar0.001",
                            "structured/brown-n32-l256-s0/magnitude-heads0.2-liar0", "structured/brown-n32-l256-s0/magnitude-heads0.2-liar_weightauto",
                            "structured/brown-n32-l256-s0/magnitude-heads0.2-liar_weight0.001",
                            "structured/brown-n32-l256-s0/magnitude-heads0.2-liar_weight0.3"]
    assert variants[9 + 8] == "structured/brown-n32-l256-s0/wanda-heads0.2-none"  # wanda reads calibration, none too
    assert len(variants) == 1 + 3 * 2 * 8
    for variant in variants[1:]:
        method_id = variant.rsplit("/", 1)[1]
        assert parse_structured_id(method_id).id == method_id
    assert parse_structured_id("fluctuation-neurons0.25-liar_weightauto").damping == "auto"
    assert parse_structured_id("fluctuation-neurons0.25-liar1e-05").damping == 1e-05
