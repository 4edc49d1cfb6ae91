"""Phenotype association of node activities: group tests, Cox models on planted hazards, KM, CLI errors."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from genodae import UserError
from genodae.assoc import associate, cox, km_split
from genodae.synthetic import planted_survival


@pytest.fixture
def cohort():
    """400 samples × 3 nodes: node1 differs between groups and drives the hazard; node0/node2 are noise."""
    rng = np.random.default_rng(0)
    n = 400
    group = np.array(["A", "B", "C", "D"])[rng.integers(0, 4, n)]
    Z = rng.normal(size=(n, 3))
    Z[group == "B", 1] += 1.0
    Z[group == "C", 1] += 0.5
    surv = planted_survival(Z[:, 1], log_hazard_ratio=0.7, seed=1)
    obs = pd.DataFrame({"group": pd.Categorical(group), "time": surv["time"].to_numpy(),
                        "event": surv["event"].to_numpy(),
                        "status": np.where(surv["event"] == 1, "Dead", "Alive")},
                       index=[f"s{i}" for i in range(n)])
    a = anndata.AnnData(np.zeros((n, 2), np.float32), obs=obs)
    a.obsm["X_dae"] = Z
    return a


def test_two_groups_mann_whitney_with_effect_sizes(cohort):
    res = associate(cohort, groupby="group", groups=["A", "B"])
    assert list(res["node"]) == ["node0", "node1", "node2"]
    r1 = res.set_index("node").loc["node1"]
    a = cohort.obsm["X_dae"][(cohort.obs.group == "A").to_numpy(), 1]
    b = cohort.obsm["X_dae"][(cohort.obs.group == "B").to_numpy(), 1]
    assert r1["pvalue"] == pytest.approx(stats.mannwhitneyu(b, a).pvalue)
    assert r1["auc"] > 0.7 and r1["rank_biserial"] == pytest.approx(2 * r1["auc"] - 1)
    assert r1["cohens_d"] == pytest.approx(1.0, abs=0.3) and r1["mean_diff"] > 0.6
    assert r1["fdr"] < 1e-6
    assert np.allclose(res["fdr"], multipletests(res["pvalue"], method="fdr_bh")[1])
    assert (res.set_index("node").loc[["node0", "node2"], "fdr"] > 0.01).all()
    t = associate(cohort, groupby="group", groups=["A", "B"], test="ttest").set_index("node")
    assert t.loc["node1", "pvalue"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)


def test_multi_group_kruskal_and_anova_eta_squared(cohort):
    res = associate(cohort, groupby="group").set_index("node")
    x = cohort.obsm["X_dae"][:, 1]
    parts = [x[(cohort.obs.group == g).to_numpy()] for g in "ABCD"]
    assert res.loc["node1", "test"] == "kruskal"
    assert res.loc["node1", "pvalue"] == pytest.approx(stats.kruskal(*parts).pvalue)
    ss_b = sum(len(p) * (p.mean() - x.mean()) ** 2 for p in parts)
    assert res.loc["node1", "eta_sq"] == pytest.approx(ss_b / ((x - x.mean()) ** 2).sum())
    assert res.loc["node1", "eta_sq"] > 0.1 > res.loc["node0", "eta_sq"]
    an = associate(cohort, groupby="group", test="anova").set_index("node")
    assert an.loc["node1", "pvalue"] == pytest.approx(stats.f_oneway(*parts).pvalue)


def test_group_errors(cohort):
    with pytest.raises(UserError, match="not in obs"):
        associate(cohort, groupby="nope")
    with pytest.raises(UserError, match="not in obs"):
        associate(cohort, groupby="group", groups=["A", "Z"])
    with pytest.raises(UserError, match="does not fit"):
        associate(cohort, groupby="group", test="mannwhitney")
    with pytest.raises(UserError, match="obsm"):
        associate(cohort, groupby="group", key="other")


def test_cox_finds_the_planted_hazard(cohort):
    res = cox(cohort, duration="time", event="event").set_index("node")
    assert res.loc["node1", "hr"] == pytest.approx(np.exp(0.7), rel=0.2)
    assert res.loc["node1", "hr_lower"] < np.exp(0.7) < res.loc["node1", "hr_upper"]
    assert res.loc["node1", "fdr"] < 1e-6
    assert (res.loc[["node0", "node2"], "fdr"] > 0.05).all()
    assert res.index[0] == "node1"  # sorted by p
    # an event given as a value of a text column, and covariates
    res2 = cox(cohort, duration="time", event="status", event_value="Dead", covariates=["group"]).set_index("node")
    assert res2.loc["node1", "hr"] > 1.5 and res2.loc["node1", "events"] == int(cohort.obs.event.sum())


def test_cox_errors(cohort):
    with pytest.raises(UserError, match="duration column"):
        cox(cohort, duration="nope", event="event")
    with pytest.raises(UserError, match="0/1"):
        cox(cohort, duration="time", event="status")
    with pytest.raises(UserError, match="no sample"):
        cox(cohort, duration="time", event="status", event_value="dead")


def test_km_split_separates_high_and_low(cohort):
    res = km_split(cohort, node="node1", duration="time", event="event")
    assert res["logrank"]["pvalue"] < 1e-4
    assert res["median_survival"]["high"] < res["median_survival"]["low"]
    assert (res["groups"] == "high").sum() == 200
    assert km_split(cohort, node="node0", duration="time", event="event")["logrank"]["pvalue"] > 0.01


def test_cli_associate_and_survival(cohort, tmp_path, capsys):
    from genodae.cli import main

    p = tmp_path / "c.h5ad"
    clinical = cohort.obs[["time", "status"]].copy()
    cohort.obs = cohort.obs[["group"]]
    cohort.write_h5ad(p)
    clinical.to_csv(tmp_path / "clin.csv")
    out = tmp_path / "a.tsv"
    assert main(["-q", "associate", str(p), "-o", str(out), "--key", "dae", "--groupby", "group"]) == 0
    assert pd.read_csv(out, sep="\t").sort_values("pvalue")["node"].iloc[0] == "node1"
    cx = tmp_path / "cox.tsv"
    assert main(["-q", "survival", str(p), "-o", str(cx), "--key", "dae", "--obs", str(tmp_path / "clin.csv"),
                 "--duration", "time", "--event", "status", "--event-value", "Dead",
                 "--km", str(tmp_path / "km.png")]) == 0
    assert pd.read_csv(cx, sep="\t")["node"].iloc[0] == "node1" and (tmp_path / "km.png").exists()
    # user errors: one line, exit 2, nothing written
    bad = tmp_path / "bad.tsv"
    assert main(["survival", str(p), "-o", str(bad), "--key", "dae", "--duration", "time", "--event", "status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'time'" in err[0] and not bad.exists()
    assert main(["associate", str(p), "-o", str(bad), "--key", "dae", "--groupby", "celltype"]) == 2
    assert "celltype" in capsys.readouterr().err and not bad.exists()


def test_cox_drops_missing_categorical_covariates_like_numeric_ones(cohort, caplog):
    cohort.obs["grp"] = pd.Series(np.where(np.arange(400) % 2, "A", "B"), index=cohort.obs_names, dtype=object)
    cohort.obs.loc[cohort.obs_names[:20], "grp"] = np.nan
    cohort.obs["num"] = np.where(np.arange(400) >= 370, np.nan, 1.0 * (np.arange(400) % 3))
    with caplog.at_level("WARNING", logger="genodae"):
        assert (cox(cohort, duration="time", event="event", covariates=["grp"])["n"] == 380).all()
    assert "20 sample(s) with a missing covariate (grp)" in caplog.text
    assert (cox(cohort, duration="time", event="event", covariates=["num"])["n"] == 370).all()
    cohort.obs["grp"] = cohort.obs["grp"].astype("category")  # a categorical dtype too
    assert (cox(cohort, duration="time", event="event", covariates=["grp", "num"])["n"] == 350).all()


def test_survival_durations_must_be_numbers_at_least_zero(cohort, caplog):
    cohort.obs["shifted"] = cohort.obs["time"] - np.median(cohort.obs["time"])
    with pytest.raises(UserError, match=r"has 200 negative duration\(s\).*>= 0"):
        cox(cohort, duration="shifted", event="event")
    cohort.obs["text"] = [f"{t:.1f} mo" for t in cohort.obs["time"]]
    with pytest.raises(UserError, match=r"400 value\(s\) that are not numbers \(e\.g\. '.* mo', .*\): write") as e:
        cox(cohort, duration="text", event="event")
    assert len(str(e.value)) < 300
    comma = cohort.obs["time"].astype(object)
    comma.iloc[3] = "7,1"
    cohort.obs["comma"] = comma
    with pytest.raises(UserError, match=r"1 value\(s\) that are not numbers \(e\.g\. '7,1'\)"):
        km_split(cohort, node="node1", duration="comma", event="event")
    # missing values stay missing: dropped with a warning, not an error
    missing = cohort.obs["time"].astype(object)
    missing.iloc[:3] = ["", np.nan, "[Not Available]"]
    cohort.obs["missing"] = missing
    with caplog.at_level("WARNING", logger="genodae"):
        assert (cox(cohort, duration="missing", event="event")["n"] == 397).all()
    assert "3 sample(s) without a valid duration or event" in caplog.text


def test_associate_groups_given_twice_continuous_columns_and_numeric_labels(cohort):
    with pytest.raises(UserError, match="given more than once"):
        associate(cohort, groupby="group", groups=["A", "A"])
    with pytest.raises(UserError, match=r"obs\['time'\] looks continuous \(400 distinct values\): bin it") as e:
        associate(cohort, groupby="time")
    assert len(str(e.value)) < 200
    cohort.obs["code"] = cohort.obs["group"].map({"A": 0, "B": 1, "C": 2, "D": 3}).astype(int)
    cohort.obs["fcode"] = cohort.obs["code"].astype(float)
    ref = associate(cohort, groupby="group", groups=["A", "B"])
    for col, groups in (("code", [0, 1]), ("code", ["0", "1"]), ("fcode", [0, 1]), ("fcode", ["0", "1"])):
        res = associate(cohort, groupby=col, groups=groups)
        assert np.allclose(res["pvalue"], ref["pvalue"]) and (res["n"] == ref["n"]).all()
    with pytest.raises(UserError, match=r"group\(s\) 7 not in obs\['code'\]"):
        associate(cohort, groupby="code", groups=[0, 7])


def test_km_split_of_a_constant_node_is_a_user_error(cohort):
    cohort.obsm["X_dae"][:, 0] = 1.0
    with pytest.raises(UserError, match="node 'node0' has constant activity .* one group: pick another node"):
        km_split(cohort, node="node0", duration="time", event="event")


def test_cli_km_node_needs_km(cohort, tmp_path, capsys):
    from genodae.cli import main

    p = tmp_path / "c.h5ad"
    cohort.write_h5ad(p)
    out = tmp_path / "cox.tsv"
    assert main(["survival", str(p), "-o", str(out), "--key", "dae", "--duration", "time", "--event", "event",
                 "--km-node", "node1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--km PNG" in err[0] and not out.exists()
    assert main(["associate", str(p), "-o", str(out), "--key", "dae", "--groupby", "group", "--groups", "A", "A"]) == 2
    assert "more than once" in capsys.readouterr().err and not out.exists()
