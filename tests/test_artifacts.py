"""Checksums and manifests: a corrupt, truncated or missing file fails on read with its path and the fix (tensor
files, folders, and small files: results, tables, corpus splits)."""

import json

import pandas as pd
import pytest
import torch
import yaml

from pruneflow.core.artifacts import (
    MANIFEST,
    ArtifactError,
    artifact_folder,
    block_file,
    load_json,
    load_tensors,
    save_file,
    save_json,
    save_tensors,
    sidecar,
    verify_folder,
)
from pruneflow.core.mask_files import load_masks, save_masks
from pruneflow.core.tiny import build_tiny_model
from pruneflow.data.calibration import load_calibration, save_calibration
from pruneflow.data.jsonl import load_texts, save_texts
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.dense_stream import build_activation_cache, load_block_stats, model_scores


def _flip_last_byte(path):
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x10]))


def test_tensor_file_round_trips_with_its_checksum(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.ones(2, dtype=torch.bfloat16)}
    save_tensors(tmp_path / "t.safetensors", tensors, {"note": "x"})
    back, meta = load_tensors(tmp_path / "t.safetensors")
    assert all(torch.equal(back[k], tensors[k]) for k in tensors) and meta["note"] == "x"


def test_every_dtype_and_shape_checks_against_the_checksum_it_was_saved_with(tmp_path):
    # the checksum on read comes from the file's bytes; on write, from the tensors: they must agree
    tensors = {"bool": torch.tensor([True, False]), "u8": torch.arange(3, dtype=torch.uint8), "scalar": torch.tensor(2.5),
               "f64": torch.randn(2, 2, dtype=torch.float64), "f16": torch.randn(4, dtype=torch.float16),
               "empty": torch.zeros(0, 3), "i32": torch.arange(4, dtype=torch.int32).reshape(2, 2)}
    save_tensors(tmp_path / "t.safetensors", tensors)
    back, _ = load_tensors(tmp_path / "t.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())


def _rss_file_kb() -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssFile:"))


def test_a_loaded_tensor_is_read_into_memory_only_where_it_is_touched(tmp_path):
    # a job that looks up a few embedding rows must not hold the whole matrix (nor a cache's unread Grams)
    save_tensors(tmp_path / "e.safetensors", {"embedding": torch.ones(8192, 2048)})  # 64 MiB
    before = _rss_file_kb()
    tensors, _ = load_tensors(tmp_path / "e.safetensors")
    rows = tensors["embedding"][:4].sum()
    loaded = _rss_file_kb()
    whole = tensors["embedding"].sum()
    assert rows == 4 * 2048 and whole == 8192 * 2048
    assert loaded - before < 8 * 1024 < _rss_file_kb() - before - 32 * 1024  # KiB: a few pages, then the matrix


@pytest.mark.parametrize("damage", ["flip", "truncate", "garble_header"])
def test_damaged_calibration_file_names_its_path_and_the_fix(tmp_path, damage):
    path = tmp_path / "calib.safetensors"
    save_calibration(path, torch.randint(0, 100, (4, 16)), corpus="x", seed="0")
    data = path.read_bytes()
    if damage == "flip":
        _flip_last_byte(path)
    elif damage == "truncate":
        path.write_bytes(data[: len(data) - 20])
    else:
        path.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(ArtifactError, match=rf"{path}: .*delete {path} and rerun"):
        load_calibration(path)


def test_folder_manifest_catches_missing_truncated_and_changed_files(tmp_path):
    folder = tmp_path / "artifact"
    with artifact_folder(folder) as out:
        (out / "a.json").write_text("{}")
        save_masks(out / "masks", 0, {"x": torch.rand(4, 9) > 0.5})
        save_masks(out / "masks", 1, {"x": torch.rand(4, 9) > 0.5})
    assert set(json.loads((folder / MANIFEST).read_text())["files"]) == {
        "a.json", "masks/block000.safetensors", "masks/block001.safetensors",
    }
    verify_folder(folder)
    (folder / "a.json").write_text("{} ")
    with pytest.raises(ArtifactError, match=rf"{folder / 'a.json'}: 3 bytes, 2 recorded .*delete {folder} and rerun"):
        verify_folder(folder)
    (folder / "a.json").write_text("[]")
    with pytest.raises(ArtifactError, match=rf"{folder / 'a.json'}: checksum differs"):
        verify_folder(folder)
    (folder / "a.json").write_text("{}")
    block_file(folder / "masks", 1).unlink()
    with pytest.raises(ArtifactError, match=r"block001.safetensors: missing"):
        verify_folder(folder)


def test_a_folder_without_manifest_is_incomplete(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ArtifactError, match=r"half has no manifest.json: .* incomplete"):
        verify_folder(tmp_path / "half")


def test_masks_are_matched_to_blocks_by_index_not_sort_order(tmp_path):
    for i in (0, 1, 2, 10):
        save_masks(tmp_path, i, {"x": torch.full((2, 8), i % 2 == 0)})
    with pytest.raises(ArtifactError, match=r"block003.safetensors: missing \(block 3 of 11\)"):
        load_masks(tmp_path)
    masks = load_masks(tmp_path, 3)
    assert [bool(masks[i]["x"].all()) for i in range(3)] == [True, False, True]
    with pytest.raises(ArtifactError, match=r"block003.safetensors: missing"):
        load_masks(tmp_path, 4)  # the model has 4 blocks: the last one's masks are missing


def test_cache_with_a_damaged_or_missing_block_fails_before_scoring(tmp_path, calib_ids):
    model, _ = build_tiny_model()
    cache = tmp_path / "acts"
    with artifact_folder(cache) as out:
        build_activation_cache(model, calib_ids, out, batch_size=8)
    _flip_last_byte(block_file(cache, 1))
    with pytest.raises(ArtifactError, match=rf"{block_file(cache, 1)}: checksum differs .*delete {cache} and rerun"):
        next(model_scores(model, get_criterion("wanda"), cache))
    with pytest.raises(ArtifactError, match=rf"{block_file(cache, 1)}: checksum of its tensors differs"):
        load_block_stats(cache, 1)  # the file's own checksum, without the folder's manifest
    block_file(cache, 1).unlink()
    with pytest.raises(ArtifactError, match=rf"{block_file(cache, 1)}: missing"):
        next(model_scores(model, get_criterion("wanda"), cache))


# ---------------------------------------------------------------- small files: results, tables, corpus splits


def _flip_bit(path, old: bytes, bit: int) -> None:
    """Flip one bit of the first byte of ``old`` in the file (a disk or memory error, a stray write)."""
    data = path.read_bytes()
    i = data.index(old)
    path.write_bytes(data[:i] + bytes([data[i] ^ bit]) + data[i + 1:])


def test_a_bit_flipped_in_a_perplexity_result_stops_its_reader_with_the_file_and_the_fix(tmp_path):
    path = tmp_path / "ppl-wiki-l64-w4-bosauto.json"
    save_json(path, {"perplexity": 253.72, "windows": 4})
    assert load_json(path)["perplexity"] == 253.72 and sidecar(path).is_file()
    _flip_bit(path, b"253.72", 0x01)  # "2" -> "3": 353.72, still valid JSON
    assert json.loads(path.read_text())["perplexity"] == 353.72
    with pytest.raises(ArtifactError, match=rf"{path}: .*checksum differs from {sidecar(path)} .*delete {path} and rerun"):
        load_json(path)


def test_a_bit_flipped_in_a_table_stops_the_claims_ledger_instead_of_turning_its_verdict(tmp_path):
    from pruneflow.report.claims import evaluate, load_claims, read_tables
    from pruneflow.report.tables import write_table

    csv = tmp_path / "tables" / "t.csv"
    rows = pd.DataFrame({"model": "m", "method": ["wanda", "magnitude"], "pattern": ["0.5", "0.5"], "stream": "-",
                         "calibration": "c", "perplexity": [36.06, 52.8]})
    write_table(rows, csv, tmp_path / "tables" / "t.md")
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump({"claims": [{
        "id": "w", "paper": "P", "claim": "c", "holds_if": "<",
        "compare": [{"table": "t", "method": "wanda", "pattern": "0.5"}, {"table": "t", "method": "magnitude", "pattern": "0.5"}]}]}))
    claims, _ = load_claims(tmp_path / "claims.yaml")
    assert evaluate(claims, read_tables([csv])).outcome.tolist() == ["holds"]
    _flip_bit(csv, b"36.06", 0x04)  # "3" -> "7": wanda 76.06, worse than magnitude
    assert evaluate(claims, {"t": pd.read_csv(csv)}).outcome.tolist() == ["does not hold"]  # what an unchecked read says
    with pytest.raises(ArtifactError, match=rf"{csv}: .*checksum differs .*delete {csv} and rerun"):
        read_tables([csv])


def test_a_bit_flipped_in_a_corpus_split_stops_its_reader(tmp_path):
    path = tmp_path / "corpora" / "brown" / "eval.jsonl"
    save_texts(path, ["The jury said.", "A second document."])
    assert load_texts(path) == ["The jury said.", "A second document."]
    _flip_bit(path, b"jury", 0x20)  # "j" -> "J"
    with pytest.raises(ArtifactError, match=rf"{path}: .*checksum differs .*delete {path} and rerun"):
        load_texts(path)


def test_an_undecodable_or_unlisted_small_file_names_itself_and_the_fix(tmp_path):
    garbled = tmp_path / "r.json"
    save_file(garbled, b'{"perplexity": \xff}')  # what its writer wrote, checksum and all: not UTF-8
    with pytest.raises(ArtifactError, match=rf"{garbled}: not UTF-8 text .*delete {garbled} and rerun"):
        load_json(garbled)
    save_file(garbled, b'{"perplexity": 1')
    with pytest.raises(ArtifactError, match=rf"{garbled}: not JSON .*delete {garbled} and rerun"):
        load_json(garbled)
    alone = tmp_path / "alone.json"
    alone.write_text("{}")  # no manifest beside it (an older PruneFlow, or a crash between the two writes)
    with pytest.raises(ArtifactError, match=rf"{alone}: no alone.json.manifest beside it .*delete {alone} and rerun"):
        load_json(alone)
    sidecar(garbled).write_bytes(b"\xff")
    with pytest.raises(ArtifactError, match=rf"{sidecar(garbled)}: unreadable .*delete {garbled} and rerun"):
        load_json(garbled)


def test_a_json_file_in_a_folder_artifact_is_checked_against_the_folders_manifest(tmp_path):
    folder = tmp_path / "variant"
    with artifact_folder(folder) as out:
        (out / "summary.json").write_text(json.dumps({"sparsity": 0.5}))
    assert load_json(folder / "summary.json") == {"sparsity": 0.5} and not sidecar(folder / "summary.json").exists()
    _flip_bit(folder / "summary.json", b"0.5", 0x01)  # "0" -> "1"
    with pytest.raises(ArtifactError, match=rf"{folder / 'summary.json'}: .*{folder / MANIFEST} .*delete {folder} and rerun"):
        load_json(folder / "summary.json")
