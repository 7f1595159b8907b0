"""What a run needs from the Hugging Face Hub, checked before any job: each repository is reachable, or in the
local cache when the Hub is offline.

Without this, a missing dataset surfaces inside a job, after the model was materialised, as a library error
that names neither the repository nor the fix. Here each repository a job still needs (a hub model, an ``hf``
corpus, a standard zero-shot task's dataset) is looked up once when the DAG is built:

- in the Hugging Face caches (``HF_HUB_CACHE``'s ``<kind>s--<owner>--<name>`` folder, or the ``datasets``
  library's processed ``<owner>___<name>`` folder): nothing is fetched;
- else, offline (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE``): a :class:`HubSourceError` naming every
  missing repository and how to fill the cache;
- else, online: the repository's info from the Hub (one small request, the same client the jobs use); a failure
  (unknown id, gated, unreachable) is reported with the Hub's reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class HubSourceError(RuntimeError):
    """A repository a job needs is neither cached nor reachable; the message says how to fix it."""


@dataclass(frozen=True)
class HubNeed:
    """A repository of the Hub that a job reads: ``kind`` "model" or "dataset", and what reads it (for messages)."""

    kind: str
    repo_id: str
    what: str


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def offline() -> bool:
    """Whether the user's environment puts the Hub offline (the variables the libraries read, their truthy spellings)."""
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE") for k in OFFLINE_VARIABLES)


def cache_folders(need: HubNeed) -> list[Path]:
    """Where the Hub's and the ``datasets`` library's caches keep ``need``'s repository."""
    from huggingface_hub import constants

    folders = [Path(constants.HF_HUB_CACHE) / f"{need.kind}s--{need.repo_id.replace('/', '--')}"]
    if need.kind == "dataset":
        import datasets.config

        folders.append(Path(datasets.config.HF_DATASETS_CACHE) / need.repo_id.replace("/", "___"))
    return folders


def is_cached(need: HubNeed) -> bool:
    """Whether the caches hold the repository: for a model, its weights (a config.json read to size the jobs
    is not enough to run them)."""
    if need.kind == "model":
        snapshots = cache_folders(need)[0] / "snapshots"
        return any(next(snapshots.glob(f"*/{pattern}"), None) for pattern in ("*.safetensors", "*.bin"))
    return any(folder.is_dir() and any(folder.iterdir()) for folder in cache_folders(need))


def run_needs(config: dict, missing) -> list[HubNeed]:
    """The repositories that the jobs of ``config`` still need: the model, while ``missing(path)`` says its dense
    folder is not made; an ``hf`` corpus, while its splits are not; a standard zero-shot task's datasets, while
    ``missing`` says one of its results is not (``missing`` receives ``("zeroshot", task)`` for that)."""
    from pruneflow.data.corpora import hf_parts
    from pruneflow.spec.zeroshot import dataset_repositories

    needs, name = [], config["model"]
    spec = config["models"][name]
    if spec["source"] == "hub" and missing(f"results/{name}/dense"):
        needs.append(HubNeed("model", spec["id"], f"models.{name}"))
    for corpus in dict.fromkeys((config["calibration"]["corpus"], config["perplexity"]["corpus"])):
        spec = config["corpora"][corpus]
        if spec["source"] == "hf" and missing(f"results/corpora/{corpus}/eval.jsonl"):
            needs += [HubNeed("dataset", part.dataset, f"corpora.{corpus}") for part in hf_parts(spec).values()]
    if any(study.get("zeroshot") for study in config["studies"].values()):
        for task in config["zeroshot"]["tasks"]:
            if missing(("zeroshot", task)):
                needs += [HubNeed("dataset", repo, f"zero-shot task {task}") for repo, _ in dataset_repositories(task)]
    return list(dict.fromkeys(needs))


def fill_hint(need: HubNeed) -> str:
    flag = " --repo-type dataset" if need.kind == "dataset" else ""
    return f"`hf download {need.repo_id}{flag}` on a machine with network and the same HF_HOME, or a run of this workflow with network"


def check_hub_needs(needs: list[HubNeed], timeout: float = 20) -> None:
    """Raise :class:`HubSourceError` naming every need that is neither cached nor (online) reachable."""
    missing = [n for n in dict.fromkeys(needs) if not is_cached(n)]
    if not missing:
        return
    if offline():
        lines = [f"- {n.kind} {n.repo_id!r} ({n.what}): fill it with {fill_hint(n)}" for n in missing]
        raise HubSourceError(
            "the Hugging Face Hub is offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set) and these repositories are "
            "not in its cache (" + str(cache_folders(missing[0])[0].parent) + "):\n" + "\n".join(lines)
        )
    from huggingface_hub import HfApi

    api, problems = HfApi(), []
    for need in missing:
        try:
            api.repo_info(need.repo_id, repo_type=need.kind, timeout=timeout)
        except Exception as err:  # unknown, gated, unreachable: the client's own exception types vary
            problems.append(f"- {need.kind} {need.repo_id!r} ({need.what}): {err.__class__.__name__}: {_first_line(err)}")
    if problems:
        raise HubSourceError(
            "these repositories of the Hugging Face Hub cannot be read (a gated one needs `hf auth login` and its "
            "licence accepted; without network, fill the cache elsewhere and set HF_HUB_OFFLINE=1):\n" + "\n".join(problems)
        )


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else "(no message)"
