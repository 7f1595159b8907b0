import pytest

from pruneflow.experiments import (
    calib_id, make_method, parse_calib_id, parse_method_id, parse_ppl_name, ppl_name, study_variants,
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
    assert parse_calib_id(calib_id(CAL)) == CAL
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
