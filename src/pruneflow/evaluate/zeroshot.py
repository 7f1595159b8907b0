"""Zero-shot accuracy of an in-memory model through lm-eval, scored as lm-eval scores it.

Local tasks (built by ``zeroshot_tasks`` into ``task_dir``) and standard lm-eval task names
(``hellaswag``, ``boolq``, ``arc_easy``, ...), groups (``mmlu``) and tags (``ai2_arc``) go through the
same call: lm-eval's own ``simple_evaluate`` with ``HFLM(pretrained=model, tokenizer=tokenizer)``,
zero-shot, bootstrap and sample logging off, every item unless a ``limit`` is given.

The Hugging Face Hub is used when it answers: a standard task's dataset comes from the Hub or, offline
(``HF_HUB_OFFLINE=1`` or ``HF_DATASETS_OFFLINE=1`` in the environment), from the local cache. Local tasks
read only their JSON file, with the Hub switched off (``datasets`` would otherwise count a download).

Each requested name gives one row: a task reports ``acc``, ``acc_norm`` (multiple choice only;
length-normalised by bytes), ``perplexity`` (loglikelihood tasks), ``n`` (items scored), ``n_total`` (items
the task has), ``limited`` (n < n_total) and ``chance``: the mean of 1/number-of-choices over the scored
items for multiple choice, 0 for loglikelihood tasks (``lastword``: an exact next word has no chance
baseline). A group reports lm-eval's aggregate (its ``aggregate_metric_list``) and each leaf under
``subtasks``; a tag (no aggregate in lm-eval) reports its leaves under ``subtasks`` only.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import yaml

from pruneflow.core.dispatch import input_device
from pruneflow.evaluate.local_tasks import BUILDERS
from pruneflow.spec.hub import OFFLINE_VARIABLES
from pruneflow.spec.hub import offline as hub_offline
from pruneflow.spec.zeroshot import SUPPORTED_OUTPUT_TYPES, task_folders

METRICS = ("acc", "acc_norm", "perplexity")


class ZeroShotError(ValueError):
    pass


def library_versions() -> dict[str, str]:
    """The versions that decide a zero-shot number: lm-eval's prompts and metrics, transformers' tokenizers and
    model code, torch's kernels (users of the reference code met different numbers from other lm-eval versions)."""
    from importlib.metadata import version

    return {"lm_eval": version("lm_eval"), "transformers": version("transformers"), "torch": torch.__version__}


@contextmanager
def offline_hub():
    """Hugging Face hub and datasets offline inside the block, restored after it.

    The libraries read the variables once, when first imported, so their module flags are set
    (and restored) too: nothing waits on a network timeout, and a missing dataset fails at once.
    """
    import datasets.config
    import huggingface_hub.constants

    env = {k: os.environ.get(k) for k in OFFLINE_VARIABLES}
    modules = [(huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")]
    flags = [(mod, attr, getattr(mod, attr)) for mod, attr in modules if hasattr(mod, attr)]
    os.environ.update({k: "1" for k in env})
    for mod, attr, _ in flags:
        setattr(mod, attr, True)
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for mod, attr, value in flags:
            setattr(mod, attr, value)


def task_dir_names(task_dir) -> set[str]:
    """The task, group and tag names that the YAML files of ``task_dir`` declare (built local tasks, or a
    researcher's own lm-eval task folder)."""
    from pruneflow.spec.zeroshot import yaml_names

    if task_dir is None or not Path(task_dir).is_dir():
        return set()
    names = set()
    for path in Path(task_dir).glob("*.yaml"):
        lines, listed = yaml_names(path.read_text(errors="replace"))
        names.update(name for key, name in lines + listed if key != "task" or (key, name) in lines)  # not a group's members
    return names


def local_task_yamls(task_dir, tasks: list[str]) -> dict[str, Path]:
    """{name: YAML path} for the requested tasks that are built in ``task_dir``."""
    found = {}
    for name in tasks:
        path = Path(task_dir) / f"{name}.yaml" if task_dir is not None else None
        if path is not None and path.is_file():
            found[name] = path
        elif name in BUILDERS:
            raise ZeroShotError(f"local zero-shot task {name!r} is not built in {str(task_dir)!r}: run zeroshot_tasks.build_task first")
    return found


def evaluate_zeroshot(model, tokenizer, tasks: list[str], task_dir=None, limit: int | None = None, batch_size: int | str = 8,
                      device=None) -> dict:
    """Zero-shot accuracy per requested name: {name: row} (rows as the module says).

    ``model`` is moved to ``device`` when one is given; None leaves it where it is (a model dispatched over
    devices by :func:`pruneflow.core.dispatch.dispatch_stream`). ``batch_size`` is an integer or ``"auto"``
    (lm-eval finds the largest that fits the device).

    ``limit`` scores the first ``limit`` items of each task (all when None); local tasks are
    shuffled when built, so their first items are a seeded random sample.
    """
    if not tasks:
        raise ZeroShotError("no zero-shot tasks given; allowed: local tasks " + ", ".join(BUILDERS) + " or lm-eval task names")
    for name, path in local_task_yamls(task_dir, tasks).items():
        data_files = (yaml.safe_load(path.read_text()).get("dataset_kwargs") or {}).get("data_files") or {}
        if isinstance(data_files.get("test"), str) and not Path(data_files["test"]).is_file():
            raise ZeroShotError(f"task {name!r}: its data file {data_files['test']!r} is missing (was {str(task_dir)!r} moved?); rebuild the task")
    local = [name for name in tasks if name in task_dir_names(task_dir)]
    # Local tasks never need the Hub; standard ones use it unless the environment says offline (the flags are
    # re-applied: the libraries read them at import, which may precede the variables).
    offline = len(local) == len(tasks) or hub_offline()
    with offline_hub() if offline else nullcontext():
        return _run_lm_eval(model, tokenizer, list(tasks), task_dir, local, limit, batch_size, device)


def _load_tasks(manager, tasks: list[str]) -> tuple[list, dict]:
    """lm-eval's objects to evaluate (a task, a group, or a tag's tasks per name) and {name: (kind, leaves)}."""
    objects, shape = [], {}
    for name in tasks:
        try:
            loaded = manager.load([name])
        except KeyError as err:
            raise ZeroShotError(f"unknown zero-shot task {name!r} ({err}); local tasks: {', '.join(BUILDERS)} (built in task_dir)") from err
        except Exception as err:  # a dataset that cannot be fetched surfaces as many exception types
            raise ZeroShotError(_load_failure(manager, name, err)) from err
        leaves = loaded["tasks"]
        for leaf, task in leaves.items():
            kind = task.get_config("output_type")
            if kind not in SUPPORTED_OUTPUT_TYPES:
                raise ZeroShotError(f"zero-shot task {leaf!r}" + (f" (of {name!r})" if leaf != name else "") + f" is a {kind} task; only "
                                    "loglikelihood and multiple-choice tasks (an accuracy) are supported")
        if name in loaded["groups"]:
            objects.append(loaded["groups"][name])
            shape[name] = ("group", leaves)
        else:
            objects.extend(leaves.values())
            shape[name] = ("task" if list(leaves) == [name] else "tag", leaves)
    return objects, shape


def _load_failure(manager, name: str, err: Exception) -> str:
    repos = _dataset_repositories(manager, name)
    where = ", ".join(f"{path}" + (f" (config {config})" if config else "") for path, config in repos) or "its datasets"
    offline = hub_offline()
    fill = "; ".join(f"datasets.load_dataset({path!r}" + (f", {config!r}" if config else "") + ")" for path, config in repos[:3])
    return (
        f"zero-shot task {name!r}: could not load its dataset {where} ({err.__class__.__name__}: {err}). "
        + ("The environment sets the Hub offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), so it must be in the Hugging Face cache "
           f"({os.environ.get('HF_DATASETS_CACHE') or '~/.cache/huggingface'}). " if offline else "The Hub did not answer and the cache does not hold it. ")
        + "Fill the cache on a machine where the Hub answers (the same HF_HOME), by running this task once, or in Python: "
        + (fill or "datasets.load_dataset(<repository>, <config>)") + "; then it loads offline with HF_HUB_OFFLINE=1"
    )


def _dataset_repositories(manager, name: str) -> list[tuple[str, str | None]]:
    """(dataset_path, dataset_name) of a task, or of a group's or tag's leaves, from lm-eval's task index."""
    index, out, todo, seen = manager.task_index, [], [name], set()
    while todo:
        entry = index.get(todo.pop(0))
        if entry is None or entry.name in seen:
            continue
        seen.add(entry.name)
        cfg = entry.cfg or {}
        if entry.kind.name == "TAG":
            todo += sorted(entry.tags)
        elif entry.kind.name == "GROUP":
            todo += [c if isinstance(c, str) else c.get("task") for c in cfg.get("task") or []]
        elif cfg.get("dataset_path") and (cfg["dataset_path"], cfg.get("dataset_name")) not in out:
            out.append((cfg["dataset_path"], cfg.get("dataset_name")))
    return out


def _chance(task, limit: int | None) -> float | None:
    """Mean of 1/#choices over the first ``limit`` evaluation documents (the ones lm-eval scores)."""
    kind = task.get_config("output_type")
    if kind in ("loglikelihood", "loglikelihood_rolling"):
        return 0.0
    if kind != "multiple_choice":
        return None
    docs = list(task.eval_docs)[:limit] if limit else list(task.eval_docs)
    return sum(1 / len(task.doc_to_choice(doc)) for doc in docs) / len(docs) if docs else None


def _metrics(name: str, metrics: dict) -> dict:
    row = {m: float(metrics[f"{m},none"]) for m in METRICS if isinstance(metrics.get(f"{m},none"), (int, float))}
    if not all(math.isfinite(v) for v in row.values()):
        raise ZeroShotError(f"task {name!r}: non-finite metrics {row}; the model produces NaN or infinite logits")
    return row


def _run_lm_eval(model, tokenizer, tasks, task_dir, local, limit, batch_size, device) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # Indexing lm-eval's ~15k built-in tasks takes about 25 s: the folders of the requested tasks' files are
    # indexed alone where the text scan finds them (the same task files), the whole index only where it does not.
    own = [str(task_dir)] if task_dir is not None and Path(task_dir).is_dir() else []
    folders = [task_folders(name) for name in tasks if name not in local]
    if all(f is not None for f in folders):
        manager = TaskManager(include_path=own + [str(p) for f in folders for p in f] or None, include_defaults=False)
    else:
        manager = TaskManager(include_path=own or None, include_defaults=True)
    objects, shape = _load_tasks(manager, tasks)

    if device is not None:
        model.to(device)
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    # HFLM puts inputs on model.device: for a dispatched model the first parameter may be an offloaded (meta)
    # one; the inputs go where the embeddings are (accelerate's hooks move them on from there).
    lm._device = input_device(model)
    with torch.no_grad():
        out = lm_eval.simple_evaluate(
            model=lm, tasks=objects, task_manager=manager, limit=limit,
            bootstrap_iters=0, log_samples=False, num_fewshot=None,
        )
    results = {}
    for name, (kind, leaves) in shape.items():
        rows = {}
        for leaf, task in leaves.items():
            counts = out["n-samples"][leaf]
            rows[leaf] = {**_metrics(leaf, out["results"][leaf]), "n": int(counts["effective"]), "n_total": int(counts["original"]),
                          "chance": _chance(task, limit)}
            rows[leaf]["limited"] = rows[leaf]["n"] < rows[leaf]["n_total"]
        if kind == "task":
            results[name] = {"kind": kind, **rows[name], "task_version": out["versions"].get(name)}
            continue
        n, n_total = sum(r["n"] for r in rows.values()), sum(r["n_total"] for r in rows.values())
        chances = [r["chance"] for r in rows.values()]
        summary = {"kind": kind, "n": n, "n_total": n_total, "limited": n < n_total, "subtasks": rows}
        if kind == "group":  # lm-eval's own aggregate, and the size-weighted chance of its leaves
            summary = {**_metrics(name, out["groups"][name]), **summary, "task_version": out["versions"].get(name),
                       "chance": None if None in chances else sum(c * r["n"] for c, r in zip(chances, rows.values())) / n}
        results[name] = summary
    return results
