"""Names and kinds of zero-shot tasks, known before any job (no torch or lm-eval import here unless a standard
task name is asked about: the workflow imports this to build its DAG).

Local tasks are built by PruneFlow from held-out text (:mod:`pruneflow.evaluate.local_tasks`); every other name
is an lm-eval task, group or tag, found by a text scan of lm-eval's task YAML files (about two seconds), or,
for names the scan cannot see (made by templates), through lm-eval's TaskManager (tens of seconds).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

LOCAL_TASKS = ("lastword", "nextsentence", "browncloze")
# Output types of the local tasks: lastword is scored as LAMBADA (a target's loglikelihood), the others choose.
LOCAL_OUTPUT_TYPES = {"lastword": "loglikelihood", "nextsentence": "multiple_choice", "browncloze": "multiple_choice"}
# The longest request (context and continuation, UTF-8 bytes) of any item a local task's builder can draw from
# the held-out text (tests/test_zeroshot.py checks it): it sizes a zero-shot job's logits (pruneflow.spec.resources).
LOCAL_REQUEST_BYTES = {"lastword": 605, "nextsentence": 562, "browncloze": 280}
# What PruneFlow scores: an accuracy from loglikelihoods. generate_until (free generation, scored by its own
# metrics) and loglikelihood_rolling (perplexity of whole documents) have no acc.
SUPPORTED_OUTPUT_TYPES = ("loglikelihood", "multiple_choice")
# The metrics each output type reports (acc_norm: length-normalised by bytes, multiple choice only).
METRICS_OF = {"loglikelihood": ("acc",), "multiple_choice": ("acc", "acc_norm")}


def is_lm_eval_task(name: str) -> bool | None:
    """Whether lm-eval knows a task (or group, or tag) of this name; None if lm-eval is not installed."""
    return _scan_lm_eval(name) or _task_manager_knows(name)


def close_lm_eval_names(name: str) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, _lm_eval_names(), n=3)


def output_types(name: str) -> dict[str, str | None]:
    """{leaf task: output type} of a local task or an lm-eval task, group or tag (a group's and a tag's leaves,
    nested groups expanded). None for a task defined in Python (its type is known only once built). An unknown
    name gives {}."""
    if name in LOCAL_OUTPUT_TYPES:
        return {name: LOCAL_OUTPUT_TYPES[name]}
    return {leaf: _task_type(cfg) for leaf, cfg in task_configs(name).items()}


def dataset_repositories(name: str) -> list[tuple[str, str | None]]:
    """(Hub dataset repository, config) of every leaf of an lm-eval task, group or tag, in the order of its leaves
    (for the checks before any job and the messages that say how to fill the cache); [] for a local task."""
    if name in LOCAL_OUTPUT_TYPES:
        return []
    found = [(cfg["dataset_path"], cfg.get("dataset_name")) for cfg in task_configs(name).values()
             if isinstance(cfg.get("dataset_path"), str) and cfg["dataset_path"] not in _LOCAL_BUILDERS]
    return list(dict.fromkeys(found))


def task_configs(name: str) -> dict[str, dict]:
    """{leaf task: its YAML configuration} of an lm-eval task, group or tag, read from lm-eval's YAML files as text
    (``include:`` followed, a group's inline overrides applied, ``!function`` values left unresolved); names the scan
    cannot resolve are read from lm-eval's TaskManager index (tens of seconds)."""
    found = _scan_configs(name, set())
    return found if found else _task_manager_configs(name)


def task_folders(name: str) -> list[Path] | None:
    """The folders of lm-eval's task files that define ``name`` (a task, group or tag) and its members, for an
    index of those alone (lm-eval's whole index takes about 25 s a job); None where the text scan cannot say."""
    if _lm_eval_names() is None:
        return None
    paths, todo, seen = [], [name], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        defined = _DEFINED.get(current, []) + _with_includers(_TAGGED.get(current, []))
        if not defined:
            return None
        for path in defined:
            paths.append(path.parent)
            cfg = _read_yaml(path)
            if cfg.get("group") == current:
                todo += [c if isinstance(c, str) else c.get("task") for c in cfg.get("task") or []
                         if isinstance(c, str) or isinstance(c, dict) and isinstance(c.get("task"), str)]
    return list(dict.fromkeys(paths))


_LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # datasets' packaged builders read local files


# ---------------------------------------------------------------- the text scan


def _scan_lm_eval(name: str) -> bool | None:
    names = _lm_eval_names()
    return None if names is None else name in names


_NAMES: set[str] | None = None
_DEFINED: dict[str, list[Path]] = {}  # task or group name -> the YAML files that define it
_TAGGED: dict[str, list[Path]] = {}  # tag -> the YAML files of the tasks it names
_INCLUDED_BY: dict[Path, list[Path]] = {}  # a YAML file -> the files that include it (they inherit its tags)

_KEY = r"^[\"']?(task|group|tag)[\"']?:"
_LINE = re.compile(_KEY + r"[ \t]*[\"']?([^\s\"'#\[]+)", re.M)
_ITEMS = re.compile(_KEY + r"[ \t]*\n((?:[ \t]*-[ \t]+\S+[ \t]*\n)+)", re.M)
_INCLUDE = re.compile(r"^[\"']?include[\"']?:[ \t]*[\"']?([^\s\"'#]+)", re.M)
_INLINE_LIST = re.compile(r"^[\"']?(tag)[\"']?:[ \t]*\[([^\]\n]*)\]", re.M)


def _lm_eval_names() -> set[str] | None:
    global _NAMES
    if _NAMES is None:
        import importlib.util

        spec = importlib.util.find_spec("lm_eval")
        if spec is None or spec.origin is None:
            return None
        _NAMES = set()
        for path in sorted((Path(spec.origin).parent / "tasks").rglob("*.yaml")):
            _index_file(path, path.read_text(errors="replace"))
    return _NAMES


def yaml_names(text: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The names an lm-eval task YAML's text declares: ([(key, name)] on one line: ``task: x`` / ``group: x``
    define x, ``tag: t`` tags the file's task; [(key, name)] in lists: a tag list, or a group's members)."""
    listed = [(key, n) for key, block in _ITEMS.findall(text) for n in re.findall(r"-[ \t]+[\"']?([^\s\"'#]+)", block)]
    listed += [(key, n.strip(" \"'")) for key, items in _INLINE_LIST.findall(text) for n in items.split(",") if n.strip(" \"'")]
    return _LINE.findall(text), listed


def _index_file(path: Path, text: str) -> None:
    lines, listed = yaml_names(text)
    for key, name in lines:
        (_TAGGED if key == "tag" else _DEFINED).setdefault(name, []).append(path)
        _NAMES.add(name)
    for key, name in listed:  # a group's members are defined elsewhere
        _NAMES.add(name)
        if key == "tag":
            _TAGGED.setdefault(name, []).append(path)
    for inc in _INCLUDE.findall(text):
        _INCLUDED_BY.setdefault(Path(os.path.normpath(path.parent / inc)), []).append(path)


def _read_yaml(path: Path, seen: frozenset = frozenset()) -> dict:
    """A task YAML with its includes merged (its own keys win), ``!function`` values as None."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        cfg = yaml.load(path.read_text(errors="replace"), Loader=Loader)  # noqa: S506 (a SafeLoader)
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    includes = cfg.pop("include", None)
    merged: dict = {}
    for inc in [includes] if isinstance(includes, str) else includes or []:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        if inc_path not in seen and inc_path.is_file():
            merged.update({k: v for k, v in _read_yaml(inc_path, seen | {path}).items() if k != "task_list"})
    return merged | cfg


def _with_includers(paths: list[Path]) -> list[Path]:
    out, todo = [], list(paths)
    while todo:
        path = todo.pop(0)
        if path not in out:
            out.append(path)
            todo += _INCLUDED_BY.get(Path(os.path.normpath(path)), [])
    return out


def _task_type(cfg: dict) -> str | None:
    """A task's output type (lm-eval's default is generate_until); None for a Python-defined task."""
    return None if "class" in cfg else cfg.get("output_type", "generate_until")


def _scan_configs(name: str, seen: set) -> dict[str, dict]:
    if name in seen or _lm_eval_names() is None:
        return {}
    seen.add(name)
    out: dict[str, dict] = {}
    for path in _DEFINED.get(name, []):
        cfg = _read_yaml(path)
        if cfg.get("group") == name:
            for child in cfg.get("task") or []:
                out |= _child_configs(child, path, seen)
            return out
        if cfg.get("task") == name:
            return {name: cfg}
    for path in _with_includers(_TAGGED.get(name, [])):  # a tag: the tasks that name it, or include a file that does
        cfg = _read_yaml(path)
        tags = cfg.get("tag") or []
        if isinstance(cfg.get("task"), str) and name in ([tags] if isinstance(tags, str) else tags):
            out[cfg["task"]] = cfg
    return out


def _child_configs(child, group_file: Path, seen: set) -> dict[str, dict]:
    """A group member: a name (a task, group or tag), an inline group, or an inline task / override of a named one."""
    if isinstance(child, str):
        return _scan_configs(child, seen) or _task_manager_configs(child)
    if not isinstance(child, dict):
        return {}
    if "group" in child:
        out: dict[str, dict] = {}
        for grandchild in child.get("task") or []:
            out |= _child_configs(grandchild, group_file, seen)
        return out
    task = child.get("task")
    if not isinstance(task, str):
        return {}
    base = _scan_configs(task, set(seen)).get(task, {})
    inc = child.get("include")
    included = _read_yaml(group_file.parent / inc) if isinstance(inc, str) else {}
    return {task: base | included | {k: v for k, v in child.items() if k != "include"}}


# ---------------------------------------------------------------- lm-eval's own index (slow, a fallback)


def _task_manager_knows(name: str) -> bool:
    from lm_eval.tasks import TaskManager

    return name in _manager_index(TaskManager)


def _task_manager_configs(name: str) -> dict[str, dict]:
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        return {}
    index = _manager_index(TaskManager)

    def leaves(n, seen):
        entry = index.get(n)
        if entry is None or n in seen:
            return {}
        seen.add(n)
        kind = entry.kind.name
        if kind == "TAG":
            return {k: v for member in sorted(entry.tags) for k, v in leaves(member, seen).items()}
        if kind == "GROUP":
            out = {}
            for child in (entry.cfg or {}).get("task") or []:
                if isinstance(child, str):
                    out |= leaves(child, seen)
                elif isinstance(child, dict) and isinstance(child.get("task"), str):
                    out[child["task"]] = leaves(child["task"], seen).get(child["task"], {}) | child
            return out
        return {n: entry.cfg or {"class": None}}

    return leaves(name, set())


_INDEX: dict | None = None


def _manager_index(manager_cls) -> dict:
    global _INDEX
    if _INDEX is None:
        _INDEX = manager_cls().task_index
    return _INDEX
