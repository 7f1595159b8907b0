# PruneFlow: prune causal language models, repair them, evaluate, and make the tables and figures.
# Usage: snakemake --cores 2            (the embedded default: SmolLM2-135M on a CPU)
#        snakemake --cores 2 --configfile config/paper.yaml --replace-workflow-config
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/prune.smk"
include: "rules/structured.smk"
include: "rules/recover.smk"
include: "rules/evaluate.smk"
include: "rules/zeroshot.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
