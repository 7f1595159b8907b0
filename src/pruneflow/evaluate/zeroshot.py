"""Zero-shot accuracy of an in-memory model through lm-eval, fully offline.

Local tasks (built by ``zeroshot_tasks`` into ``task_dir``) and standard lm-eval task names
(``hellaswag``, ``boolq``, ``arc_easy``, ...) go through the same call: lm-eval's own
``simple_evaluate`` with ``HFLM(pretrained=model, tokenizer=tokenizer)``, zero-shot, bootstrap
and sample logging off. Standard tasks only work where their datasets are already in the
Hugging Face cache, since the hub is never contacted. A group name (``mmlu``) is expanded to its
leaf tasks, each reported on its own.

Every task reports ``acc``, ``acc_norm`` (multiple choice only; length-normalised by bytes),
``perplexity`` (loglikelihood tasks), ``n`` (items scored) and ``chance``: the mean of
1/number-of-choices over the scored items for multiple choice, 0 for loglikelihood tasks
(``lastword``: an exact next word has no chance baseline), None for generation tasks.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from pruneflow.core.dispatch import input_device
from pruneflow.evaluate.local_tasks import BUILDERS

METRICS = ("acc", "acc_norm", "perplexity")


class ZeroShotError(ValueError):
    pass


@contextmanager
def offline_hub():
    """Hugging Face hub and datasets offline inside the block, restored after it.

    The libraries read the variables once, when first imported, so their module flags are set
    (and restored) too: nothing waits on a network timeout, and a missing dataset fails at once.
    """
    import datasets.config
    import huggingface_hub.constants

    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
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


def _chance(task, limit: int | None) -> float | None:
    """Mean of 1/#choices over the first ``limit`` evaluation documents (the ones lm-eval scores)."""
    kind = task.get_config("output_type")
    if kind in ("loglikelihood", "loglikelihood_rolling"):
        return 0.0
    if kind != "multiple_choice":
        return None
    docs = list(task.eval_docs)[:limit] if limit else list(task.eval_docs)
    return sum(1 / len(task.doc_to_choice(doc)) for doc in docs) / len(docs) if docs else None


def evaluate_zeroshot(model, tokenizer, tasks: list[str], task_dir=None, limit: int | None = None, batch_size: int = 8, device=None) -> dict:
    """Zero-shot accuracy per task: {task: {acc, acc_norm?, perplexity?, n, chance}}.

    ``model`` is moved to ``device`` when one is given; None leaves it where it is (a model dispatched over
    devices by :func:`pruneflow.core.dispatch.dispatch_stream`).

    ``limit`` scores the first ``limit`` items of each task (all when None); local tasks are
    shuffled when built, so their first items are a seeded random sample.
    """
    if not tasks:
        raise ZeroShotError("no zero-shot tasks given; allowed: local tasks " + ", ".join(BUILDERS) + " or lm-eval task names")
    local = local_task_yamls(task_dir, tasks)
    for name, path in local.items():
        data = Path(yaml.safe_load(path.read_text())["dataset_kwargs"]["data_files"]["test"])
        if not data.is_file():
            raise ZeroShotError(f"task {name!r}: its data file {str(data)!r} is missing (was {str(task_dir)!r} moved?); rebuild the task")
    with offline_hub():
        return _run_lm_eval(model, tokenizer, tasks, task_dir, local, limit, batch_size, device)


def _run_lm_eval(model, tokenizer, tasks, task_dir, local, limit, batch_size, device) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # Indexing lm-eval's ~15k built-in tasks takes seconds: only when a standard name is asked for.
    manager = TaskManager(include_path=str(task_dir) if local else None, include_defaults=len(local) < len(tasks))
    try:
        loaded = manager.load(list(tasks))
    except KeyError as err:
        raise ZeroShotError(f"unknown zero-shot task in {tasks}: {err}; local tasks: {', '.join(BUILDERS)} (built in task_dir)") from err
    except Exception as err:  # offline dataset loads surface as many exception types
        raise ZeroShotError(
            f"could not load zero-shot tasks {tasks} offline ({err.__class__.__name__}: {err}); standard lm-eval tasks need their "
            "datasets in the Hugging Face cache, the local tasks need only task_dir"
        ) from err
    leaves = loaded["tasks"]

    if device is not None:
        model.to(device)
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    # HFLM puts inputs on model.device: for a dispatched model the first parameter may be an offloaded (meta)
    # one; the inputs go where the embeddings are (accelerate's hooks move them on from there).
    lm._device = input_device(model)
    with torch.no_grad():
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(leaves.values()), task_manager=manager, limit=limit,
            bootstrap_iters=0, log_samples=False, num_fewshot=None,
        )
    results = {}
    for name, task in leaves.items():
        metrics = out["results"][name]
        row = {m: float(metrics[f"{m},none"]) for m in METRICS if f"{m},none" in metrics}
        if not all(math.isfinite(v) for v in row.values()):
            raise ZeroShotError(f"task {name!r}: non-finite metrics {row}; the model produces NaN or infinite logits")
        row["n"] = int(out["n-samples"][name]["effective"])
        row["chance"] = _chance(task, limit)
        results[name] = row
    return results
