"""The workflow's vocabulary without torch: config schema and defaults, names of variants and
artifacts, criteria, patterns, model configs read from disk, checks run before any job."""
