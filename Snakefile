# PruneFlow: prune causal language models, repair them, evaluate, and make the tables and figures.
# Usage: snakemake --cores 2            (the embedded default: SmolLM2-135M on a CPU)
#        snakemake --cores 2 --configfile config/paper.yaml --replace-workflow-config
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("8.0")

# The library of this checkout, for the DAG and for every job (not another installed copy), also without `pip install -e`.
# Prepended, not replacing: a plugin package on the caller's PYTHONPATH (entry point group pruneflow.methods) stays
# importable by the DAG and by every job.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [SRC]
        + [
            p
            for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and p != SRC
        ]
    )
)  # inherited by every job (a conda environment too): this checkout's pruneflow first

from pruneflow.spec.config import ConfigError, check_yaml_syntax

# Snakemake's own message for a YAML mistake names neither the file nor the line.
if Path("config.yaml").is_file():
    try:
        check_yaml_syntax("config.yaml")
    except ConfigError as err:
        raise WorkflowError(f"invalid configuration: {err}") from None


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/inputs.smk"
include: "rules/data.smk"
include: "rules/prune.smk"
include: "rules/allocation.smk"
include: "rules/structured.smk"
include: "rules/recover.smk"
include: "rules/evaluate.smk"
include: "rules/zeroshot.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# Every job also runs pruneflow's modules, not only its script: a checksum of those its script imports is a
# param of its rule, so an edit of the code a step runs reruns what it made (pruneflow.spec.triggers).
for _rule in workflow.rules:
    if _rule.script:
        _rule.set_params(
            code=TRIGGERS.script_code(
                Path(workflow.basedir, "scripts", Path(str(_rule.script)).name), SRC
            )
        )
