"""Local zero-shot task builders and lm-eval evaluation on the tiny model (offline)."""

import json
import os
import random

import pytest
import torch
import torch.nn.functional as F

from pruneflow.core.tiny import build_tiny_model
from pruneflow.data import corpora
from pruneflow.evaluate.local_tasks import (
    NUM_CHOICES,
    TaskBuildError,
    brown_tagged_documents,
    build_browncloze,
    build_lastword,
    build_nextsentence,
    split_sentences,
)
from pruneflow.evaluate.zeroshot import ZeroShotError, evaluate_zeroshot, library_versions, offline_hub

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


GROUP = "tinygroup"  # an lm-eval group of two local tasks, aggregated as mmlu is (weighted by size)
TAG = "tinytag"  # an lm-eval tag over copies of two local tasks (a tag has no aggregate)


def write_group_and_tag(folder):
    """In lm-eval's own YAML forms: a group (``group:``, ``task:`` list, ``aggregate_metric_list``) and two tasks that
    include a local task's YAML under another name, tagged."""
    import yaml

    (folder / f"{GROUP}.yaml").write_text(yaml.safe_dump({
        "group": GROUP, "task": ["nextsentence", "browncloze"], "metadata": {"version": 1},
        "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": True} for m in ("acc", "acc_norm")]}))
    for name in ("nextsentence", "browncloze"):
        (folder / f"{name}_tagged.yaml").write_text(yaml.safe_dump({"include": f"{name}.yaml", "task": f"{name}_tagged", "tag": [TAG]}))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zeroshot")
    for name, build in BUILDS.items():
        build(folder, 0)
    write_group_and_tag(folder)
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


def test_evaluate_zeroshot_passes_standard_names_to_lm_eval(built, monkeypatch):
    """``boolq`` resolves in lm-eval's own registry; offline without its data, the error names the task, its dataset
    repository and how to fill the cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = build_tiny_model()
    try:
        row = evaluate_zeroshot(model, tok, ["boolq"], built, limit=2)["boolq"]
    except ZeroShotError as err:
        for part in ("'boolq'", "aps/super_glue (config boolq)", "Hugging Face cache", "load_dataset('aps/super_glue', 'boolq')",
                     "HF_HUB_OFFLINE=1"):
            assert part in str(err)
    else:  # a machine whose cache holds BoolQ
        assert row["n"] == 2 and row["chance"] == 0.5 and row["limited"]


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


def test_zeroshot_of_a_stored_variant_read_block_by_block_equals_the_whole_model(built, tiny_results, tmp_path):
    """runtime.zeroshot_blocks 1 (the CPU's default): every batch reads each block from the variant; the same numbers."""
    from pruneflow.core.artifacts import artifact_folder
    from pruneflow.core.dispatch import stream_dispatch
    from pruneflow.core.stream import open_stream
    from pruneflow.core.writer import write_full_variant

    model, tok = build_tiny_model()
    with artifact_folder(tmp_path / "dense") as out:
        write_full_variant(out, model, tok, {})
    stream = open_stream(tmp_path / "dense")
    streamed = stream_dispatch(stream, "cpu", 1)
    assert all(p.is_meta for p in stream.blocks_list().parameters())  # nothing of a block stays between batches
    assert evaluate_zeroshot(streamed, stream.tokenizer, list(BUILDS), built, limit=6, batch_size=4) == tiny_results


def test_local_requests_are_within_the_bytes_the_memory_formula_assumes(tmp_path):
    """Every request (context and continuation) of 300 items of each local task, built from the held-out text."""
    from pruneflow.evaluate.local_tasks import build_task, heldout_documents
    from pruneflow.spec.zeroshot import LOCAL_REQUEST_BYTES

    wiki = heldout_documents("lastword")  # nextsentence's too
    for name in BUILDS:
        build_task(name, heldout_documents(name) if name == "browncloze" else wiki, tmp_path, n_items=300, seed=1)
        requests = [(item["context"], " " + c) for item in read_items(tmp_path, name)
                    for c in item.get("choices", [item.get("target")])]
        longest = max(len((context + cont).encode()) for context, cont in requests)
        assert 0.8 * LOCAL_REQUEST_BYTES[name] < longest <= LOCAL_REQUEST_BYTES[name], name


# ---------------------------------------------------------------- lm-eval's own numbers, groups, tags, the Hub


def lm_eval_reference(model, tok, tasks, include_path, batch_size=4):
    """lm-eval's own evaluation, called as its documentation shows, with nothing of PruneFlow's."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path), include_defaults=False) if include_path else None
    return lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size), tasks=tasks,
                                   task_manager=manager, bootstrap_iters=0)


def assert_equals_lm_eval(ours, theirs, name, leaf=None):
    row = ours[name] if leaf is None else ours[name]["subtasks"][leaf]
    ref = theirs["results"][leaf or name]
    for metric in ("acc", "acc_norm", "perplexity"):
        assert (metric in row) == (f"{metric},none" in ref), (name, leaf, metric)
        if metric in row:
            assert row[metric] == ref[f"{metric},none"], (name, leaf, metric)
    if leaf is not None or ours[name]["kind"] == "task":
        assert row["n"] == theirs["n-samples"][leaf or name]["effective"] == theirs["n-samples"][leaf or name]["original"]


def test_zeroshot_equals_lm_evals_own_simple_evaluate(built):
    """Every item of tasks, a group and a tag: acc, acc_norm, perplexity and n equal lm-eval's own simple_evaluate;
    the group's aggregate is its leaves' accuracies weighted by their sizes, as its YAML asks."""
    model, tok = build_tiny_model()
    tasks = ["lastword", GROUP, TAG]
    ours = evaluate_zeroshot(model, tok, tasks, built, batch_size=4)
    theirs = lm_eval_reference(model, tok, tasks, built)
    assert_equals_lm_eval(ours, theirs, "lastword")
    assert ours[GROUP]["kind"] == "group" and set(ours[GROUP]["subtasks"]) == {"nextsentence", "browncloze"}
    assert ours[TAG]["kind"] == "tag" and set(ours[TAG]["subtasks"]) == {"nextsentence_tagged", "browncloze_tagged"}
    for name in (GROUP, TAG):
        for leaf in ours[name]["subtasks"]:
            assert_equals_lm_eval(ours, theirs, name, leaf)
    assert_equals_lm_eval(ours, theirs, GROUP)
    leaves = ours[GROUP]["subtasks"].values()
    for metric in ("acc", "acc_norm"):
        assert ours[GROUP][metric] == pytest.approx(sum(r[metric] * r["n"] for r in leaves) / sum(r["n"] for r in leaves))
    assert "acc" not in ours[TAG] and ours[TAG]["n"] == 60
    # a tagged copy scores its original's items: the same numbers
    assert ours[TAG]["subtasks"]["browncloze_tagged"]["acc"] == ours[GROUP]["subtasks"]["browncloze"]["acc"]
    assert all(not r["limited"] for r in [ours["lastword"], ours[GROUP], ours[TAG]])


def test_a_limit_scores_the_first_items_and_is_marked(built, tiny_results):
    model, tok = build_tiny_model()
    row = evaluate_zeroshot(model, tok, [GROUP], built, limit=6, batch_size=4)[GROUP]
    assert row["limited"] and (row["n"], row["n_total"]) == (12, 60)
    assert {k: (r["n"], r["n_total"], r["limited"]) for k, r in row["subtasks"].items()} == \
        {"nextsentence": (6, 30, True), "browncloze": (6, 30, True)}
    for leaf in ("nextsentence", "browncloze"):  # the same six items as each task on its own
        assert row["subtasks"][leaf]["acc"] == tiny_results[leaf]["acc"]


def test_auto_batch_size_scores_as_a_fixed_one(built, tiny_results):
    model, tok = build_tiny_model()
    row = evaluate_zeroshot(model, tok, ["browncloze"], built, limit=6, batch_size="auto")["browncloze"]
    assert (row["acc"], row["acc_norm"], row["n"]) == tuple(tiny_results["browncloze"][k] for k in ("acc", "acc_norm", "n"))


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt recorded and refused (the Hub's variables unset): what the code tried to reach."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("no network in this test")

    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    return attempts


def test_local_tasks_reach_no_network_with_the_hub_variables_unset(built, no_network, tiny_results):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch_flags = [huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE]
    model, tok = build_tiny_model()
    assert evaluate_zeroshot(model, tok, list(BUILDS), built, limit=6, batch_size=4) == tiny_results
    assert evaluate_zeroshot(model, tok, [GROUP], built, limit=2, batch_size=4)[GROUP]["n"] == 4
    assert no_network == []
    assert [huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE] == monkeypatch_flags  # restored


@pytest.mark.parametrize("offline", [None, "1"])
def test_standard_tasks_use_the_hub_unless_the_environment_says_offline(built, monkeypatch, offline):
    """Only the user's HF_HUB_OFFLINE / HF_DATASETS_OFFLINE switch the Hub off for lm-eval's tasks."""
    import datasets.config
    import huggingface_hub.constants

    from pruneflow.evaluate import zeroshot

    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    if offline:
        monkeypatch.setenv("HF_DATASETS_OFFLINE", offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    seen = []
    monkeypatch.setattr(zeroshot, "_run_lm_eval", lambda *a: seen.append((huggingface_hub.constants.HF_HUB_OFFLINE,
                                                                        datasets.config.HF_HUB_OFFLINE)) or {})
    evaluate_zeroshot(None, None, ["lastword", "boolq"], built)
    evaluate_zeroshot(None, None, ["lastword"], built)
    assert seen == [(bool(offline), bool(offline)), (True, True)]


def test_generation_tasks_are_refused_by_name(built, tmp_path):
    import yaml

    (tmp_path / "tinygen.yaml").write_text(yaml.safe_dump({
        "task": "tinygen", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(built / "lastword.jsonl")}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{context}}", "doc_to_target": "{{target}}",
        "metric_list": [{"metric": "exact_match"}]}))
    model, tok = build_tiny_model()
    with pytest.raises(ZeroShotError, match="'tinygen' is a generate_until task; only loglikelihood and multiple-choice tasks"):
        evaluate_zeroshot(model, tok, ["tinygen"], tmp_path)


def test_library_versions_are_the_installed_ones():
    from importlib.metadata import version

    assert library_versions() == {"lm_eval": version("lm_eval"), "transformers": version("transformers"), "torch": torch.__version__}


def test_output_types_read_lm_evals_task_files():
    """lm-eval's YAML files read as text: a task, a tag whose members inherit it by ``include:`` (arc_challenge), a
    generation task, a rolling-loglikelihood one, and a group of groups of tags (mmlu: one leaf per subject file)."""
    import importlib.util
    from pathlib import Path

    from pruneflow.spec.zeroshot import dataset_repositories, output_types

    assert output_types("boolq") == {"boolq": "multiple_choice"}
    assert output_types("ai2_arc") == {"arc_easy": "multiple_choice", "arc_challenge": "multiple_choice"}
    assert output_types("gsm8k") == {"gsm8k": "generate_until"}
    assert output_types("wikitext") == {"wikitext": "loglikelihood_rolling"}
    assert output_types("lastword") == {"lastword": "loglikelihood"}
    subjects = Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks" / "mmlu" / "default"
    mmlu = output_types("mmlu")
    assert set(mmlu) == {p.stem for p in subjects.glob("mmlu_*.yaml")} and set(mmlu.values()) == {"multiple_choice"}
    # the Hub repositories the papers' seven tasks read (the names tests/hub_repos.py serves), none for a local task
    from hub_repos import ZEROSHOT_DATASETS

    for task, (repo, config) in ZEROSHOT_DATASETS.items():
        assert dataset_repositories(task) == [(repo, config)]
    assert dataset_repositories("ai2_arc") == [("allenai/ai2_arc", "ARC-Easy"), ("allenai/ai2_arc", "ARC-Challenge")]
    assert dataset_repositories("lastword") == []


# ---------------------------------------------------------------- standard tasks through the stand-in Hub

HUB_RUN = """
import json, sys
import lm_eval
from lm_eval.models.huggingface import HFLM
from pruneflow.core.tiny import build_tiny_model
from pruneflow.evaluate.zeroshot import ZeroShotError, evaluate_zeroshot
reference, tasks = sys.argv[1] == "reference", sys.argv[2:]
model, tok = build_tiny_model()
try:
    out = {"ours": evaluate_zeroshot(model, tok, tasks, batch_size=4)}
except ZeroShotError as err:
    out = {"error": str(err)}
if reference:
    theirs = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=4), tasks=tasks, bootstrap_iters=0)
    out["theirs"] = {"results": theirs["results"], "n-samples": theirs["n-samples"]}
print(json.dumps(out))
"""


def _hub_run(env: dict, *args: str) -> dict:
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, "-c", HUB_RUN, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.slow
def test_standard_tasks_through_the_stand_in_hub_equal_lm_evals_own_then_load_offline(hub, tmp_path):
    """boolq (aps/super_glue) and arc_easy (allenai/ai2_arc) downloaded by lm-eval's own code from the stand-in Hub:
    PruneFlow's numbers equal lm-eval's simple_evaluate on every item; offline, the cache that run filled gives the
    same numbers without a request; with neither Hub nor cache, the error names the task, its repository and the fix."""
    tasks = ["boolq", "arc_easy"]
    online = _hub_run(hub.env(tmp_path / "hf"), "reference", *tasks)
    assert "error" not in online, online.get("error")
    for name in tasks:
        assert_equals_lm_eval(online["ours"], online["theirs"], name)
        assert online["ours"][name]["n"] == 24 and not online["ours"][name]["limited"]  # every item the Hub serves
    assert online["ours"]["boolq"]["chance"] == 0.5
    assert any("aps/super_glue" in r for r in hub.requests) and any("allenai/ai2_arc" in r for r in hub.requests)
    served = len(hub.requests)
    offline = _hub_run({**hub.env(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}, "ours", *tasks)
    assert offline == {"ours": online["ours"]} and len(hub.requests) == served
    neither = _hub_run({**hub.env(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}, "ours", "arc_easy")["error"]
    for part in ("'arc_easy'", "allenai/ai2_arc (config ARC-Easy)", "load_dataset('allenai/ai2_arc', 'ARC-Easy')", "HF_HUB_OFFLINE"):
        assert part in neither
