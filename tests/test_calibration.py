import pytest

from pruneflow.core.tiny import byte_tokenizer
from pruneflow.data.calibration import CalibrationError, sample_windows
from pruneflow.data.corpora import CorpusError

DOCS = [f"{i} " + "lorem ipsum dolor sit amet " * (i % 7) for i in range(50)]


def test_windows_have_the_shape_and_come_from_documents():
    tok = byte_tokenizer()
    ids = sample_windows(DOCS, tok, nsamples=6, seqlen=40, seed=0)
    assert ids.shape == (6, 40)
    streams = [tok(d, add_special_tokens=False)["input_ids"] for d in DOCS]
    for row in ids.tolist():
        assert any(any(s[i : i + 40] == row for i in range(len(s) - 39)) for s in streams)


def test_same_seed_same_windows_other_seed_other_windows():
    tok = byte_tokenizer()
    a = sample_windows(DOCS, tok, 6, 40, seed=1)
    assert a.equal(sample_windows(DOCS, tok, 6, 40, seed=1))
    assert not a.equal(sample_windows(DOCS, tok, 6, 40, seed=2))


def test_too_short_corpus_names_the_settings():
    with pytest.raises(CalibrationError, match="nsamples=4.*seqlen=1000"):
        sample_windows(["short text"] * 3, byte_tokenizer(), 4, 1000, 0)


def test_the_exact_check_counts_tokens_and_names_the_corpus():
    """Documents long enough but too few tokens for nsamples x seqlen: one message naming the corpus,
    before any draw (a billion samples never reach memory)."""
    docs = ["x" * 100] * 5  # 500 byte tokens in documents longer than seqlen
    with pytest.raises(CalibrationError, match=r"corpus 'c' \(c\.txt\): nsamples=1000000000 windows of seqlen=50 tokens need "
                       r"50000000000 tokens, but its documents longer than seqlen hold 500"):
        sample_windows(docs, byte_tokenizer(), 1_000_000_000, 50, 0, source="corpus 'c' (c.txt)")
    with pytest.raises(CalibrationError, match=r"corpus 'c' \(c\.txt\): no documents"):
        sample_windows([], byte_tokenizer(), 4, 50, 0, source="corpus 'c' (c.txt)")
    assert isinstance(CalibrationError("x"), CorpusError)
