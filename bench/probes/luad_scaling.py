"""Probe (2026-12-07): bench/signatures.py's Shedden LUAD survival demonstration with the model input min-max scaled
(the default until 2026-12-08) or z-scored (what ``scaling="auto"`` now gives these log-scale data). Per scaling:
5 seeds of the ``signatures`` preset (n_latent 10), Cox per node (BH over nodes) and a median-split log-rank test of
the top node, for seed 0's varimax read-out, the 5-seed ensemble and each seed's default (sparse) read-out.

    python bench/probes/luad_scaling.py      # ~4 min on 1 core; prints one line per read-out
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: _common.py

import _common as C  # noqa: E402

import genodae  # noqa: E402

SURV = dict(duration="MONTHS_TO_LAST_CONTACT_OR_DEATH", event="VITAL_STATUS", event_value="Dead")


def main() -> None:
    d = C.shared_data_dir() / "bulk" / "shedden2008_luad"
    if not d.is_dir():
        print(f"skipped: {d} not found (set GENODAE_SHARED_DATA)")
        return
    C.set_threads(1)
    for scaling in ("minmax", "zscore"):
        adata = genodae.read(d / "shedden2008_lung_150probes_x_444.csv", missing="impute",
                             sample_sheet=d / "shedden2008_lung_clinical.csv")
        genodae.pp.prepare(adata, n_top_genes=0, scaling=scaling)
        keys = [f"dae_s{s}" for s in range(5)]
        for s, key in enumerate(keys):
            genodae.tl.dae(adata, preset="signatures", n_latent=10, seed=s, num_threads=1, key_added=key)
            genodae.tl.signatures(adata, key=key)  # the default (sparse) read-out
        genodae.tl.signatures(adata, key="dae_s0", rotation="varimax")
        genodae.tl.ensemble(adata, keys=keys, key_added="dae_ens", rotation="varimax")
        readouts = [("seed 0 varimax", "dae_s0_varimax"), ("ensemble varimax", "dae_ens")]
        readouts += [(f"seed {s} sparse", f"dae_s{s}_sparse") for s in range(5)]
        for tag, rkey in readouts:
            cox = genodae.assoc.cox(adata, key=rkey, **SURV)
            node = cox.iloc[0]["node"]
            km = genodae.assoc.km_split(adata, key=rkey, node=node, **SURV)
            print(f"{scaling}\t{tag}\t{node}\ttop p {cox.iloc[0]['pvalue']:.2e}\tlog-rank "
                  f"{km['logrank']['statistic']:.2f}\tnodes at FDR < 0.05: {int((cox['fdr'] < 0.05).sum())}", flush=True)


if __name__ == "__main__":
    main()
