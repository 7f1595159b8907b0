"""Names of the locally built zero-shot tasks (no torch or lm-eval here: the workflow imports this to build its DAG)."""

LOCAL_TASKS = ("lastword", "nextsentence", "browncloze")
