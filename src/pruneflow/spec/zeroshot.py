"""Names of the locally built zero-shot tasks (no torch or lm-eval here: the workflow imports this to build its DAG)."""

LOCAL_TASKS = ("lastword", "nextsentence", "browncloze")


def is_lm_eval_task(name: str) -> bool | None:
    """Whether lm-eval knows a task (or group, or tag) of this name; None if lm-eval is not installed.

    A text scan of lm-eval's task YAML files (about a second) finds most names; the rest (names made
    by templates) are looked up through lm-eval's TaskManager, which indexes every task (tens of seconds).
    """
    return _scan_lm_eval(name) or _task_manager_knows(name)


def close_lm_eval_names(name: str) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, _lm_eval_names(), n=3)


def _scan_lm_eval(name: str) -> bool | None:
    names = _lm_eval_names()
    return None if names is None else name in names


_NAMES: set[str] | None = None


def _lm_eval_names() -> set[str] | None:
    global _NAMES
    if _NAMES is None:
        import importlib.util
        import re
        from pathlib import Path

        spec = importlib.util.find_spec("lm_eval")
        if spec is None or spec.origin is None:
            return None
        line = re.compile(r"^(?:task|group|tag):\s*[\"']?([^\s\"'#]+)", re.M)
        items = re.compile(r"^(?:task|group|tag):\s*\n((?:[ \t]+-[ \t]+\S+[ \t]*\n)+)", re.M)
        _NAMES = set()
        for path in (Path(spec.origin).parent / "tasks").rglob("*.yaml"):
            text = path.read_text(errors="replace")
            _NAMES.update(line.findall(text))
            for block in items.findall(text):
                _NAMES.update(re.findall(r"-\s+[\"']?([^\s\"'#]+)", block))
    return _NAMES


def _task_manager_knows(name: str) -> bool:
    from lm_eval.tasks import TaskManager

    return name in TaskManager().all_tasks
