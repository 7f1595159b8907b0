# Input, parameter and path functions of the rules (Snakemake's lint wants functions apart from rules).


# ---------------------------------------------------------------- prune rules (prune.smk)
def maybe_temp(path, section="activations"):
    """``temp(path)`` when the config's ``section.temporary`` is true: deleted once every consumer ran."""
    return temp(path) if config[section]["temporary"] else path


def calib_input(w):
    return [] if w.calib == "none" else f"results/{w.model}/calib/{w.calib}.safetensors"


def allocation_input(method_id):
    """The allocation artifact an OWL method reads (none for uniform, so uniform jobs keep their inputs)."""

    def inputs(w):
        artifact = ex.allocation_artifact(ex.parse_method_id(method_id(w)), w.calib)
        return f"results/{w.model}/{artifact}" if artifact else []

    return inputs


def method_cache(w):
    """The activation cache a dense-stream or calibration-free variant reads (none where it reads no statistics:
    magnitude; with OWL its calibration shows in the allocation it reads)."""
    method = ex.parse_method_id(w.method)
    return f"results/{w.model}/acts/{w.calib}" if method.needs_stats else []


# ---------------------------------------------------------------- allocation rules (allocation.smk)
def allocation_cache(w):
    """The activation cache an allocation reads (none for one that reads the weights alone)."""
    allocation, _ = ex.parse_allocation_id(w.allocation)
    return (
        f"results/{w.model}/acts/{w.calib}"
        if allocation.entry.needs_calibration
        else []
    )


def block_figure_inputs(w):
    """The pruned variants behind a study's rows (a recovered variant keeps its parent's masks) and the
    allocations of its OWL methods."""
    calib = ex.calib_id(config["calibration"])
    pruned = [
        next(p for p in ex.variant_lineage(v) if p.startswith("pruned/"))
        for v in study_variants(w.study)
        if v != "dense"
    ]
    allocations = [
        a
        for m in ex.study_methods(config["studies"][w.study])
        if (a := ex.allocation_artifact(m, calib))
    ]
    return {
        "variants": [f"results/{MODEL}/{v}" for v in dict.fromkeys(pruned)],
        "allocations": [f"results/{MODEL}/{a}" for a in dict.fromkeys(allocations)],
    }


# ---------------------------------------------------------------- recover rules (recover.smk)
def recovery_params(w):
    rec = next(
        r
        for s in config["studies"].values()
        for r in map(ex.parse_recovery, s.get("recoveries", []))
        if r is not None and r.token(ex.recovery_settings(r, config)) == w.recovery
    )
    return as_json(
        {"recovery": rec.__dict__, "settings": ex.recovery_settings(rec, config)}
    )


def recover_inputs(w):
    """The dense model and the calibration samples; the pruned variant unless the recovery prunes as it
    goes (order interleaved: block by block from the dense model, its masks its own)."""
    inputs = {
        "dense": f"results/{w.model}/dense",
        "calib": f"results/{w.model}/calib/{w.calib}.safetensors",
    }
    if not ex.is_interleaved(f"recovered/{w.pcalib}/{w.method}/{w.calib}/{w.recovery}"):
        inputs["pruned"] = f"results/{w.model}/pruned/{w.pcalib}/{w.method}"
    return inputs


# ---------------------------------------------------------------- zeroshot rules (zeroshot.smk)
def zeroshot_name(task):
    """A local task's result names its items and seed; an lm-eval task's, the items scored (all, or limit<N>)."""
    zs = config["zeroshot"]
    if task in LOCAL_TASKS:
        return f"zeroshot-{task}-n{zs['items']}-s{zs.get('seed', 0)}.json"
    limit = zs.get("limit")
    return f"zeroshot-{task}-{'all' if limit is None else f'limit{limit}'}.json"


def zeroshot_inputs(w):
    inputs = {"model": variant_dir(w), "parents": variant_parents(w)}
    if w.task in LOCAL_TASKS:
        inputs["task"] = f"results/zeroshot/tasks/{w.task}-n{w.nitems}-s{w.seed}"
    return inputs


# ---------------------------------------------------------------- report rules (report.smk)
def benchmark_of(artifact):
    """The benchmark file of the job that made ``artifact`` (a path under results/<model>/)."""
    return f"results/benchmarks/{MODEL}/{artifact}.tsv"


def study_costs(study):
    """{variant: {"prune": [benchmark files], "recover": [...]}}: the jobs that made each variant."""
    return {
        v: {
            column: [benchmark_of(a) for a in artifacts]
            for column, artifacts in ex.making_steps(v).items()
        }
        for v in study_variants(study)
    }


def study_inputs(w):
    study = config["studies"][w.study]
    variants = study_variants(w.study)
    ppl = ex.ppl_name(config["perplexity"])
    costs = study_costs(w.study)
    inputs = {
        "ppl": [f"results/{MODEL}/eval/{v}/{ppl}" for v in variants],
        "benchmarks": sorted(
            {f for c in costs.values() for files in c.values() for f in files}
        ),
    }
    if study.get("kind") == "sensitivity":
        artifacts = ex.sensitivity_artifacts(study, config)
        inputs["sensitivity"] = [f"results/{MODEL}/{a}" for a in artifacts]
        inputs["sensitivity_benchmarks"] = [
            benchmark_of(a.removesuffix(".json")) for a in artifacts
        ]
    if study.get("kind") == "structured" and study.get("speed"):
        inputs["speed"] = [
            f"results/{MODEL}/eval/{v}/speed-l{SPEED_SEQLEN}.json" for v in variants
        ]
    if (
        study.get("kind") != "structured"
        and CLAIMS_BANDS is not None
        and CLAIMS_BANDS.is_file()
    ):
        inputs["bands"] = [
            str(CLAIMS_BANDS)
        ]  # the measured noise bands: a column of the table
    if study.get("zeroshot"):
        tasks = config["zeroshot"]["tasks"]
        inputs["zeroshot"] = [
            f"results/{MODEL}/eval/{v}/{zeroshot_name(t)}"
            for v in variants
            for t in tasks
        ]
    return inputs


def claims_inputs(_w):
    inputs = {
        "claims": CLAIMS_FILE,
        "tables": expand("results/tables/{study}.csv", study=list(config["studies"])),
    }
    if CLAIMS_BANDS is not None and CLAIMS_BANDS.is_file():
        inputs["bands"] = [str(CLAIMS_BANDS)]
    return inputs


# ---------------------------------------------------------------- export rules (evaluate.smk)
def export_plan(study_name):
    """What a study's export reads: every variant but the dense model (whose results are the cards'
    reference), each with its readable folder name, its perplexity, the study's zero-shot results and, for a
    structured study with ``speed: true``, its speed result."""
    from pruneflow.spec.export_names import export_names

    study = config["studies"][study_name]
    variants = study_variants(study_name)
    if variants == ["dense"]:
        raise WorkflowError(
            f"studies.{study_name}: a {study.get('kind', 'unstructured')} study has no pruned variants to export; "
            "allowed: an unstructured, recovery or structured study"
        )
    names = export_names(variants, config["calibration"])
    ppl = ex.ppl_name(config["perplexity"])
    tasks = config["zeroshot"]["tasks"] if study.get("zeroshot") else []
    speed = study.get("kind") == "structured" and study.get("speed")

    def results(v):
        entry = {
            "ppl": f"results/{MODEL}/eval/{v}/{ppl}",
            "zeroshot": [f"results/{MODEL}/eval/{v}/{zeroshot_name(t)}" for t in tasks],
        }
        if speed:
            entry["speed"] = f"results/{MODEL}/eval/{v}/speed-l{SPEED_SEQLEN}.json"
        return entry

    spec = config["models"][MODEL]
    return {
        "model": MODEL,
        "base_model": spec["id"] if spec.get("source") == "hub" else MODEL,
        "study": study_name,
        "dense": results("dense"),
        "variants": [
            {
                "variant": v,
                "name": names[v],
                "folder": f"results/{MODEL}/{v}",
                **results(v),
            }
            for v in variants
            if v != "dense"
        ],
    }


def export_inputs(w):
    """The variants (and the parents they are rebuilt from) and every result the cards show."""
    plan = export_plan(w.study)
    entries = [plan["dense"], *plan["variants"]]
    lineage = [
        f"results/{MODEL}/{p}"
        for e in plan["variants"]
        for p in ex.variant_lineage(e["variant"])[1:]
    ]
    return {
        "variants": [e["folder"] for e in plan["variants"]],
        "parents": list(dict.fromkeys(lineage)),
        "ppl": [e["ppl"] for e in entries],
        "zeroshot": [p for e in entries for p in e["zeroshot"]],
        "speed": [e["speed"] for e in entries if "speed" in e],
    }


# ---------------------------------------------------------------- the Hub, before any job
# Every Hub repository a job still needs (the model, hf corpora, standard zero-shot datasets) is cached, or
# answers when online; else the run stops here naming each one and how to fill the cache (pruneflow.spec.hub).
def _still_missing(what):
    if isinstance(
        what, tuple
    ):  # ("zeroshot", task): a result of any variant that is not made yet
        studies = [s for s in config["studies"] if config["studies"][s].get("zeroshot")]
        return any(
            not Path(f"results/{MODEL}/eval/{v}/{zeroshot_name(what[1])}").exists()
            for s in studies
            for v in study_variants(s)
        )
    return not Path(what).exists()


try:
    check_hub_needs(run_needs(config, _still_missing))
except HubSourceError as err:
    raise WorkflowError(f"a source on the Hugging Face Hub: {err}") from None
