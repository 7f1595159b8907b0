"""Local zero-shot task builders and lm-eval evaluation on the tiny model (offline)."""

import json
import os
import random

import pytest
import torch
import torch.nn.functional as F

from pruneflow.data import corpora
from pruneflow.core.tiny import build_tiny_model
from pruneflow.evaluate.zeroshot import ZeroShotError, evaluate_zeroshot, offline_hub
from pruneflow.evaluate.local_tasks import (
    NUM_CHOICES,
    TaskBuildError,
    brown_tagged_documents,
    build_browncloze,
    build_lastword,
    build_nextsentence,
    split_sentences,
)

torch.set_num_threads(1)

WORDS = "river castle harbor empire garden temple village mountain bridge forest island valley".split()
VERBS = "built crossed founded painted ruled visited described opened".split()


def wiki_docs(n=60, seed=0):
    """Wikipedia-like summaries: 2-5 sentences, the last ending in an alphabetic word and a period."""
    rng = random.Random(seed)
    docs = []
    for d in range(n):
        sents = []
        for s in range(rng.randint(2, 5)):
            words = [rng.choice(WORDS + VERBS) for _ in range(rng.randint(6, 12))]
            sents.append(f"The {words[0]} number {d}-{s} " + " ".join(words[1:]) + ".")
        docs.append(" ".join(sents))
    return docs


def brown_tagged(n_docs=3, seed=0):
    """Raw Brown-style files: tab-indented sentences of word/tag tokens, blank lines between."""
    rng = random.Random(seed)
    nouns = "cat dog house car tree road book door table window".split()
    verbs = "saw took found made kept left held gave".split()
    adjs = "big old new small red green quiet dark".split()
    docs = []
    for _ in range(n_docs):
        lines = []
        for _ in range(30):
            toks = ["The/at", f"{rng.choice(adjs)}/jj", f"{rng.choice(nouns)}/nn", f"{rng.choice(verbs)}/vbd",
                    "the/at", f"{rng.choice(nouns)}/nn", "in/in", "the/at", f"{rng.choice(adjs)}/jj", f"{rng.choice(nouns)}/nn", "./."]
            lines.append("\t" + " ".join(toks))
        docs.append("\n\n\n" + "\n\n\n".join(lines) + "\n")
    return docs


def read_items(folder, name):
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]


BUILDS = {
    "lastword": lambda folder, seed: build_lastword(wiki_docs(), folder, n_items=30, seed=seed, min_words=10),
    "nextsentence": lambda folder, seed: build_nextsentence(wiki_docs(), folder, n_items=30, seed=seed),
    "browncloze": lambda folder, seed: build_browncloze(brown_tagged(), folder, n_items=30, seed=seed),
}


@pytest.mark.parametrize("name", list(BUILDS))
def test_builders_are_deterministic_per_seed(tmp_path, name):
    a, b, c = (tmp_path / x for x in "abc")
    BUILDS[name](a, 0), BUILDS[name](b, 0), BUILDS[name](c, 1)
    assert (a / f"{name}.jsonl").read_bytes() == (b / f"{name}.jsonl").read_bytes()
    # The YAML differs only by the folder it points at.
    assert (a / f"{name}.yaml").read_text().replace(str(a), "") == (b / f"{name}.yaml").read_text().replace(str(b), "")
    assert (a / f"{name}.jsonl").read_bytes() != (c / f"{name}.jsonl").read_bytes()
    assert len(read_items(a, name)) == 30


def test_lastword_items_rebuild_their_document(tmp_path):
    docs = wiki_docs()
    build_lastword(docs, tmp_path, n_items=30, seed=0, min_words=10)
    for item in read_items(tmp_path, "lastword"):
        assert item["target"].isalpha() and item["context"] and not item["context"].endswith(" ")
        assert f"{item['context']} {item['target']}." in docs


def test_nextsentence_items_are_well_formed(tmp_path):
    docs = wiki_docs()
    build_nextsentence(docs, tmp_path, n_items=30, seed=0)
    for item in read_items(tmp_path, "nextsentence"):
        choices, label = item["choices"], item["label"]
        assert len(choices) == NUM_CHOICES and len(set(choices)) == NUM_CHOICES and all(c.strip() for c in choices)
        # The correct ending continues its own document; the distractors come from other documents.
        owners = [[d for d in docs if c in d] for c in choices]
        home = [d for d in docs if d.startswith(item["context"] + " " + choices[label])]
        assert len(home) == 1
        assert sum(home[0] in o for o in owners) == 1


def test_browncloze_items_are_well_formed(tmp_path):
    tagged = brown_tagged()
    text = "\n".join(corpora.brown_document(t) for t in tagged)
    build_browncloze(tagged, tmp_path, n_items=30, seed=0)
    for item in read_items(tmp_path, "browncloze"):
        choices, label = item["choices"], item["label"]
        assert len(choices) == NUM_CHOICES and len(set(choices)) == NUM_CHOICES and all(c.strip() for c in choices)
        assert choices[label].startswith(item["answer"])
        rest = choices[label][len(item["answer"]):]
        # Only the blanked word differs, the answer is among the words exactly once.
        assert all(c.endswith(rest) for c in choices)
        words = [c[: len(c) - len(rest)] for c in choices]
        assert words.count(item["answer"]) == 1 and all(w.isalpha() for w in words)
        assert f"{item['context']} {choices[label]}" in text  # the correct choice restores the corpus sentence


def test_builders_refuse_too_few_items(tmp_path):
    with pytest.raises(TaskBuildError, match="n_items=500"):
        build_nextsentence(wiki_docs(), tmp_path, n_items=500)


def test_split_sentences_keeps_abbreviations_and_initials():
    text = "Dr. Smith met J. R. Tolkien in the U.S. Army in 1950. Then he left! Why? Nobody knows."
    assert split_sentences(text) == ["Dr. Smith met J. R. Tolkien in the U.S. Army in 1950.", "Then he left!", "Why?", "Nobody knows."]


def test_brown_tagged_documents_follow_the_corpus_split(tmp_path):
    for i, raw in enumerate(brown_tagged(n_docs=12, seed=3)):
        (tmp_path / f"ca{i + 1:02d}").write_text(raw)
    for part in ("calib", "eval"):
        expected = corpora.corpus_splits({"source": "brown", "path": str(tmp_path), "eval_fraction": 0.4})[part]
        assert [corpora.brown_document(r) for r in brown_tagged_documents(tmp_path, part, 0.4)] == expected
    assert brown_tagged_documents(tmp_path, "eval", 0.4)  # the split is not empty


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zeroshot")
    for name, build in BUILDS.items():
        build(folder, 0)
    return folder


@pytest.fixture(scope="module")
def tiny_results(built):
    model, tok = build_tiny_model()
    return evaluate_zeroshot(model, tok, list(BUILDS), built, limit=6, batch_size=4)


def test_evaluate_zeroshot_runs_local_tasks_offline(tiny_results):
    assert set(tiny_results) == set(BUILDS)
    for name, row in tiny_results.items():
        assert row["n"] == 6
        assert 0 <= row["acc"] <= 1
        assert row["chance"] == (0.0 if name == "lastword" else 1 / NUM_CHOICES)
        assert ("acc_norm" in row) == (name != "lastword")
    assert tiny_results["lastword"]["perplexity"] > 1


@torch.no_grad()
def continuation_logprobs(model, tok, context, continuation):
    """Sum of log p(continuation | context) and whether it is the greedy continuation (byte tokenizer)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    ids = tok(context + continuation, add_special_tokens=False)["input_ids"]
    logp = F.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
    targets = torch.tensor(ids[len(ctx):])
    rows = logp[len(ctx) - 1:]
    return rows.gather(1, targets[:, None]).sum().item(), bool((rows.argmax(-1) == targets).all())


def test_evaluate_zeroshot_matches_direct_scoring(built, tiny_results):
    """lm-eval's numbers equal scoring the items by hand: the YAML wiring (delimiter, label, target) is right."""
    model, tok = build_tiny_model()
    for name in ("nextsentence", "browncloze"):
        acc = acc_norm = 0
        for item in read_items(built, name)[:6]:
            lls = torch.tensor([continuation_logprobs(model, tok, item["context"], " " + c)[0] for c in item["choices"]])
            lens = torch.tensor([float(len(c)) for c in item["choices"]])
            acc += int(lls.argmax()) == item["label"]
            acc_norm += int((lls / lens).argmax()) == item["label"]
        assert tiny_results[name]["acc"] == pytest.approx(acc / 6)
        assert tiny_results[name]["acc_norm"] == pytest.approx(acc_norm / 6)
    items = read_items(built, "lastword")[:6]
    scored = [continuation_logprobs(model, tok, it["context"], " " + it["target"]) for it in items]
    assert tiny_results["lastword"]["acc"] == pytest.approx(sum(g for _, g in scored) / 6)


def test_evaluate_zeroshot_limit_above_task_size_scores_all(built):
    model, tok = build_tiny_model()
    row = evaluate_zeroshot(model, tok, ["browncloze"], built, limit=1000)["browncloze"]
    assert row["n"] == 30


def test_evaluate_zeroshot_names_unbuilt_local_tasks(tmp_path):
    model, tok = build_tiny_model()
    with pytest.raises(ZeroShotError, match="not built"):
        evaluate_zeroshot(model, tok, ["lastword"], tmp_path)


def test_evaluate_zeroshot_passes_standard_names_to_lm_eval(built):
    """``boolq`` resolves in lm-eval's own registry; offline without its data, the error says why."""
    model, tok = build_tiny_model()
    try:
        row = evaluate_zeroshot(model, tok, ["boolq"], built, limit=2)["boolq"]
    except ZeroShotError as err:
        assert "super_glue" in str(err) and "Hugging Face cache" in str(err)
    else:  # a machine whose cache holds BoolQ
        assert row["n"] == 2 and row["chance"] == 0.5


def test_offline_hub_sets_and_restores_the_flags(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with offline_hub():
        assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert not huggingface_hub.constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE
    assert "HF_HUB_OFFLINE" not in os.environ


def test_unknown_local_task_names_the_allowed_ones(tmp_path):
    from pruneflow.evaluate.local_tasks import build_task, heldout_documents

    with pytest.raises(TaskBuildError, match="allowed: lastword, nextsentence, browncloze"):
        build_task("lambada", [], tmp_path)
    with pytest.raises(TaskBuildError, match="'lambada'"):
        heldout_documents("lambada")


def test_zeroshot_of_a_stored_variant_dispatched_to_disk_equals_the_whole_model(built, tiny_results, tmp_path):
    """A model larger than the memory given (runtime.max_memory) scores the same with its blocks on disk."""
    from pruneflow.core.artifacts import artifact_folder
    from pruneflow.core.dispatch import dispatch_stream
    from pruneflow.core.stream import open_stream
    from pruneflow.core.writer import write_full_variant

    model, tok = build_tiny_model()
    with artifact_folder(tmp_path / "dense") as out:
        write_full_variant(out, model, tok, {})
    stream, offload = open_stream(tmp_path / "dense"), tmp_path / "offload"
    offload.mkdir()
    dispatched = dispatch_stream(stream, "cpu", {"cpu": "100KB"}, offload)
    assert set(dispatched.hf_device_map.values()) == {"cpu", "disk"} and (offload / "index.json").is_file()
    assert evaluate_zeroshot(dispatched, stream.tokenizer, list(BUILDS), built, limit=6, batch_size=4) == tiny_results
