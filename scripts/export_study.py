"""Export a study's variants as Hugging Face folders, each with its model card (README.md) and record
(pruneflow.json), and an index (index.csv); one variant in memory at a time."""
import json
from pathlib import Path

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.runtime import job
from pruneflow.report.model_card import git_describe
from pruneflow.report.study_export import export_study

commit = git_describe(Path(snakemake.scriptdir).parent)  # the workflow's checkout
with job(snakemake.log[0], snakemake.threads), artifact_folder(snakemake.output[0]) as out:
    export_study(json.loads(snakemake.params.plan), out, commit)
