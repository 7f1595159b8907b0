"""The claims ledger: every claim of claims.yaml evaluated over the study tables (holds / does not hold / not run)."""
from pruneflow.core.artifacts import save_file
from pruneflow.core.atomic import atomic_path
from pruneflow.core.runtime import job
from pruneflow.report import claims

inp, out = snakemake.input, snakemake.output
with job(snakemake.log[0], snakemake.threads):
    ledger_claims, _ = claims.load_claims(inp.claims)
    bands = claims.read_bands(inp.bands[0]) if inp.get("bands") else []
    df = claims.evaluate(ledger_claims, claims.read_tables(inp.tables), bands)
    save_file(out.csv, df.to_csv(index=False).encode())
    with atomic_path(out.md) as tmp:
        tmp.write_text(claims.ledger_markdown(df))
    print(df[["id", "outcome", "comparison"]].to_string())
