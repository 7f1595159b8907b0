"""Print the README's results section from results/tables/*.csv (run after the default pipeline)."""

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "results" / "tables"

RECOVERY = ["method", "pattern", "recovery", "optimiser", "perplexity", "trainable_pct", "recover_s", "recover_peak_mb"]
STRUCTURED = ["criterion", "target", "ratio", "reconstruction", "damping", "damping_chosen", "params_m", "removed_params_pct",
              "perplexity", "tokens_per_s", "prune_s"]
COLUMNS = {
    "wanda_table": ["method", "pattern", "stream", "perplexity", "noise_band_pct", "measured_sparsity", "prune_s", "LLaMA-7B ppl (Wanda paper)"],
    "wanda_groups": ["method", "pattern", "stream", "perplexity", "prune_s"],
    "sparsity_sweep": ["method", "pattern", "stream", "perplexity", "measured_sparsity", "prune_s"],
    "zeroshot_table": ["method", "pattern", "perplexity", "acc_lastword", "acc_nextsentence", "acc_browncloze", "acc_mean"],
    "reconstruction_table": RECOVERY,
    "perp_table": RECOVERY,
    "liar_table": STRUCTURED,
    "liar_ablation": STRUCTURED,
    "recon_sweep": RECOVERY,
    "perp_sweep": RECOVERY,
    "liar_sweep": STRUCTURED,
}

for study, columns in COLUMNS.items():
    path = TABLES / f"{study}.csv"
    if not path.exists():
        continue
    df = pd.read_csv(path)
    if "pattern" in df.columns:  # the dense row has no pattern
        df["pattern"] = df["pattern"].astype(object).where(df["pattern"].notna(), "-")
    print(f"**{study}**\n")
    print(df[[c for c in columns if c in df.columns]].to_markdown(index=False, floatfmt=".4g"))
    print()

claims = TABLES / "claims.md"
if claims.exists():  # the README's ledger block, between <!-- claims ledger --> and <!-- end claims ledger -->
    print("**claims**\n")
    print(claims.read_text())
