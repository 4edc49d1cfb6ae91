"""Phenotype association of node activities: group tests with effect sizes, Cox models, Kaplan–Meier splits.

Node activities are the columns of ``obsm[f"X_{key}"]`` (a model, its rotation or an ensemble).
Every table has one row per node and a Benjamini–Hochberg ``fdr`` over the nodes.
"""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _keys
from .enrich import bh
from .errors import UserError
from .get import activities  # noqa: F401  (re-exported: genodae.assoc.activities, public since 0.1)

log = logging.getLogger("genodae")

TWO_GROUP_TESTS = ("mannwhitney", "ttest")
MULTI_GROUP_TESTS = ("kruskal", "anova")
MAX_NUMERIC_GROUPS = 20  # a numeric column with more distinct values is taken as continuous, not as groups
# values of a duration column read as missing, not as unparsable: empty, NA spellings, TCGA's "[Not Available]"
_MISSING_TEXT = re.compile(r"\s*(|na|n/a|#n/a|<na>|nan|null|none|\[[^\]]*\])\s*", re.IGNORECASE)


def _obs_column(adata: AnnData, col: str, what: str) -> pd.Series:
    if col not in adata.obs:
        raise UserError(f"{what} column {col!r} not in obs; available: {', '.join(map(str, adata.obs.columns)) or 'none'}")
    return adata.obs[col]


def _few(values, k: int = 6) -> str:
    """At most ``k`` values for a one-line message, with how many there are in all."""
    values = list(values)
    head = ", ".join(map(str, values[:k]))
    return head if len(values) <= k else f"{head}, … ({len(values)} in all)"


def _match_groups(lab: pd.Series, groups, groupby: str) -> list[str]:
    """The labels (``str`` of the categories of ``lab``) of the asked ``groups``, matched by text or, in a numeric
    column, by value (``0`` and ``"0"`` both pick the category ``0.0``)."""
    cats = lab.cat.categories
    by_str = {str(c): str(c) for c in cats}
    by_num = {float(c): str(c) for c in cats} if pd.api.types.is_numeric_dtype(cats.dtype) else {}
    out, missing = [], []
    for g in groups:
        hit = by_str.get(str(g))
        if hit is None and by_num:
            try:
                hit = by_num.get(float(g))
            except (TypeError, ValueError):
                pass
        (missing if hit is None else out).append(str(g) if hit is None else hit)
    if missing:
        raise UserError(f"group(s) {_few(missing)} not in obs[{groupby!r}]; present: {_few(cats)}")
    dup = sorted({g for g in out if out.count(g) > 1})
    if dup:
        raise UserError(f"group(s) {_few(dup)} of obs[{groupby!r}] given more than once: give each group once")
    return out


def associate(
    adata: AnnData,
    *,
    groupby: str,
    key: str = _keys.DEFAULT,
    groups: list[str] | None = None,
    test: str = "auto",
) -> pd.DataFrame:
    """Test every node's activity for differences between sample groups.

    Two groups: Mann–Whitney U (default) or Welch's t; effect sizes ``auc`` (P(activity in group 2 >
    group 1), i.e. U / n1·n2; 0.5 = none), ``rank_biserial`` (2·auc − 1), ``cohens_d`` and ``mean_diff``
    (group 2 − group 1, groups in category order). More groups: Kruskal–Wallis (default) with
    ``epsilon_sq`` (H / (n − 1)) or one-way ANOVA, both with ``eta_sq`` (between-group share of the sum
    of squares). Cells with a missing label are left out; ``groups`` picks and orders the groups (in a numeric
    column matched by value: ``[0, 1]`` or ``["0", "1"]``).

    Returns one row per node: ``node``, ``test``, ``statistic``, ``pvalue``, ``fdr`` (BH over nodes), the
    effect sizes, ``n`` and per-group means (``mean_<group>``); sorted by node.

    Raises
    ------
    UserError
        ``groupby`` not in obs; a group not in it or given twice; fewer than 2 groups, or a group with fewer than 2
        samples; a numeric ``groupby`` with more than 20 distinct values and no ``groups`` (a continuous
        column); a ``test`` that does not fit the number of groups.

    Examples
    --------
    >>> genodae.assoc.associate(adata, key="dae_sparse", groupby="celltype").sort_values("pvalue").head()
    """
    from scipy import stats

    t0 = time.perf_counter()
    A = activities(adata, key)
    lab = _obs_column(adata, groupby, "group")
    numeric = pd.api.types.is_numeric_dtype(lab.dtype) and not pd.api.types.is_bool_dtype(lab.dtype)
    lab = lab.astype("category") if not isinstance(lab.dtype, pd.CategoricalDtype) else lab
    if groups is None:
        present = lab.value_counts()
        groups = [str(c) for c in lab.cat.categories if present.get(c, 0) > 0]
        if numeric and len(groups) > MAX_NUMERIC_GROUPS:
            raise UserError(f"obs[{groupby!r}] looks continuous ({len(groups)} distinct values): bin it into groups, "
                            "or use survival/cox")
    groups = _match_groups(lab, groups, groupby)
    lab_s = lab.astype(str).where(lab.notna(), None)
    keep = lab_s.isin(groups).to_numpy()
    if len(groups) < 2:
        raise UserError(f"obs[{groupby!r}] has {len(groups)} group(s) with samples; testing needs at least 2")
    idx = [np.flatnonzero(keep & (lab_s == g).to_numpy()) for g in groups]
    small = [g for g, i in zip(groups, idx, strict=True) if len(i) < 2]
    if small:
        raise UserError(f"group(s) {_few(small)} of obs[{groupby!r}] have fewer than 2 samples")
    if test == "auto":
        test = "mannwhitney" if len(groups) == 2 else "kruskal"
    allowed = TWO_GROUP_TESTS if len(groups) == 2 else MULTI_GROUP_TESTS
    if test not in allowed:
        raise UserError(f"test {test!r} does not fit {len(groups)} groups; use one of {', '.join(allowed)}")
    rows = []
    for node in A.columns:
        x = A[node].to_numpy()
        parts = [x[i] for i in idx]
        allx = np.concatenate(parts)
        n = len(allx)
        ss_tot = ((allx - allx.mean()) ** 2).sum()
        ss_between = sum(len(p) * (p.mean() - allx.mean()) ** 2 for p in parts)
        row = {"node": node, "test": test, "n": n}
        if len(groups) == 2:
            a, b = parts
            if test == "mannwhitney":
                res = stats.mannwhitneyu(b, a, alternative="two-sided")
                stat, p = res.statistic, res.pvalue
            else:
                res = stats.ttest_ind(b, a, equal_var=False)
                stat, p = res.statistic, res.pvalue
            u = stats.mannwhitneyu(b, a, alternative="two-sided").statistic
            auc = u / (len(a) * len(b))
            pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
            row.update(statistic=float(stat), pvalue=float(p), auc=float(auc), rank_biserial=float(2 * auc - 1),
                       cohens_d=float((b.mean() - a.mean()) / pooled) if pooled > 0 else np.nan,
                       mean_diff=float(b.mean() - a.mean()))
        else:
            if test == "kruskal":
                res = stats.kruskal(*parts)
                row["epsilon_sq"] = float(res.statistic / (n - 1))
            else:
                res = stats.f_oneway(*parts)
            row.update(statistic=float(res.statistic), pvalue=float(res.pvalue))
        row["eta_sq"] = float(ss_between / ss_tot) if ss_tot > 0 else np.nan
        for g, part in zip(groups, parts, strict=True):
            row[f"mean_{g}"] = float(part.mean())
        rows.append(row)
    df = pd.DataFrame(rows)
    df["pvalue"] = df["pvalue"].fillna(1.0)
    df.insert(df.columns.get_loc("pvalue") + 1, "fdr", bh(df["pvalue"].to_numpy()))
    df.attrs.update(groupby=groupby, groups=list(groups), key=key)
    log.info("association of %d nodes of %s with obs[%r] (%s, %d groups) in %.2fs: %d with FDR < 0.05", len(df),
             key, groupby, test, len(groups), time.perf_counter() - t0, int((df["fdr"] < 0.05).sum()))
    return df


def _durations(adata: AnnData, duration: str) -> pd.Series:
    """``obs[duration]`` as numbers; missing values (NaN, empty, NA spellings, ``[Not Available]``) become NaN.
    Text that is not a number (``7.1 mo``, ``7,1``) or a negative duration is a UserError."""
    raw = _obs_column(adata, duration, "duration")
    raw = raw.astype(object).where(raw.notna(), None)
    T = pd.to_numeric(raw, errors="coerce")
    text = raw[T.isna() & raw.notna()].astype(str)
    bad = text[~text.str.fullmatch(_MISSING_TEXT)]
    if len(bad):
        raise UserError(f"obs[{duration!r}] has {len(bad)} value(s) that are not numbers "
                        f"(e.g. {', '.join(map(repr, pd.unique(bad)[:3]))}): "
                        "write durations as plain numbers in one unit, with '.' as decimal point (7.1, not 7,1 or 7.1 mo)")
    neg = T < 0
    if neg.any():
        raise UserError(f"obs[{duration!r}] has {int(neg.sum())} negative duration(s) (min {T.min():g}): durations "
                        "must be times since the origin (e.g. diagnosis), >= 0")
    return T


def _survival_frame(adata: AnnData, duration: str, event: str, event_value: str | None) -> pd.DataFrame:
    T = _durations(adata, duration)
    E_raw = _obs_column(adata, event, "event")
    if event_value is not None:
        E = (E_raw.astype(str) == str(event_value)).astype(float).where(E_raw.notna())
        if not (E == 1).any():
            raise UserError(f"no sample has obs[{event!r}] == {event_value!r}; values: "
                            f"{', '.join(map(str, pd.unique(E_raw.dropna())[:6]))}")
    else:
        if E_raw.dtype == bool:
            E = E_raw.astype(float)
        else:
            E = pd.to_numeric(E_raw, errors="coerce")
            if E.notna().sum() == 0 or not set(E.dropna().unique()) <= {0, 1}:
                raise UserError(f"obs[{event!r}] must be 0/1 (1 = event) or give the event value "
                                f"(values: {', '.join(map(str, pd.unique(E_raw.dropna())[:6]))})")
    df = pd.DataFrame({"T": T.to_numpy(), "E": E.to_numpy()}, index=adata.obs_names)
    bad = df.isna().any(axis=1)
    if bad.all():
        raise UserError(f"no sample has both a duration (obs[{duration!r}]) and an event (obs[{event!r}])")
    if bad.any():
        log.warning("survival: %d sample(s) without a valid duration or event are left out", int(bad.sum()))
    return df


def cox(
    adata: AnnData,
    *,
    duration: str,
    event: str,
    key: str = _keys.DEFAULT,
    event_value: str | None = None,
    covariates: list[str] | None = None,
    penalizer: float = 0.0,
) -> pd.DataFrame:
    """Cox proportional hazards of survival on each node's activity (lifelines), one model per node.

    Activities are standardised, so ``hr`` is the hazard ratio per SD of activity (HR > 1: higher activity,
    shorter survival). ``covariates`` (numeric or categorical ``obs`` columns, one-hot encoded) are added to
    every model. ``event`` is a 0/1 column, or any column with ``event_value`` naming the event (e.g.
    ``VITAL_STATUS`` == ``Dead``). ``duration`` holds numbers >= 0 (time since the origin); samples with a
    missing duration, event or covariate (numeric or categorical) are left out, with a warning saying how many.

    Returns one row per node: ``node``, ``hr``, ``hr_lower``, ``hr_upper`` (95% CI), ``coef``, ``se``,
    ``z``, ``pvalue``, ``fdr`` (BH over nodes), ``concordance``, ``n``, ``events``; sorted by p-value.

    Raises
    ------
    UserError
        A column not in obs; a negative or non-numeric duration (missing values are left out); an event column
        that is not 0/1 without ``event_value``, or no sample with ``event_value``; fewer than 2 events.

    Examples
    --------
    >>> genodae.assoc.cox(adata, key="dae_sparse", duration="MONTHS_TO_LAST_CONTACT_OR_DEATH",
    ...                   event="VITAL_STATUS", event_value="Dead")
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    t0 = time.perf_counter()
    A = activities(adata, key)
    surv = _survival_frame(adata, duration, event, event_value)
    cov = None
    ok = surv.notna().all(axis=1)
    if covariates:
        raw = pd.DataFrame({c: _obs_column(adata, c, "covariate") for c in covariates})
        # before one-hot encoding: get_dummies turns a missing category into the reference level
        no_cov = raw.isna().any(axis=1) & ok
        if no_cov.any():
            log.warning("Cox: %d sample(s) with a missing covariate (%s) are left out", int(no_cov.sum()),
                        ", ".join(c for c in covariates if raw.loc[no_cov, c].isna().any()))
        ok &= ~no_cov
        cov = pd.get_dummies(raw, drop_first=True, dtype=float)
    if int(surv.loc[ok, "E"].sum()) < 2:
        raise UserError("fewer than 2 events among the samples: a Cox model cannot be fitted")
    rows = []
    for node in A.columns:
        x = A.loc[ok, node]
        sd = x.std()
        df = pd.DataFrame({"activity": (x - x.mean()) / (sd if sd > 0 else 1.0), "T": surv.loc[ok, "T"],
                           "E": surv.loc[ok, "E"]})
        if cov is not None:
            df = df.join(cov.loc[ok])
        try:
            cph = CoxPHFitter(penalizer=penalizer).fit(df, duration_col="T", event_col="E")
            s = cph.summary.loc["activity"]
            rows.append(dict(node=node, hr=float(s["exp(coef)"]), hr_lower=float(s["exp(coef) lower 95%"]),
                             hr_upper=float(s["exp(coef) upper 95%"]), coef=float(s["coef"]),
                             se=float(s["se(coef)"]), z=float(s["z"]), pvalue=float(s["p"]),
                             concordance=float(cph.concordance_index_), n=int(len(df)), events=int(df["E"].sum())))
        except ConvergenceError:
            log.warning("Cox model for %s did not converge; reported with p = 1", node)
            rows.append(dict(node=node, hr=np.nan, hr_lower=np.nan, hr_upper=np.nan, coef=np.nan, se=np.nan,
                             z=np.nan, pvalue=1.0, concordance=np.nan, n=int(len(df)), events=int(df["E"].sum())))
    out = pd.DataFrame(rows)
    out.insert(out.columns.get_loc("pvalue") + 1, "fdr", bh(out["pvalue"].to_numpy()))
    out = out.sort_values("pvalue", kind="stable").reset_index(drop=True)
    log.info("Cox models of %d nodes of %s (%d samples, %d events) in %.1fs: %d with FDR < 0.05", len(out), key,
             int(ok.sum()), int(surv.loc[ok, "E"].sum()), time.perf_counter() - t0, int((out["fdr"] < 0.05).sum()))
    return out


def km_split(
    adata: AnnData,
    *,
    node: str,
    duration: str,
    event: str,
    key: str = _keys.DEFAULT,
    event_value: str | None = None,
    quantile: float = 0.5,
) -> dict:
    """Kaplan–Meier curves of samples with high vs low activity of one node, split at a quantile (median).

    Returns a dict: ``groups`` (Series high/low per sample), ``fitters`` (group → lifelines
    KaplanMeierFitter), ``logrank`` (dict: statistic, pvalue), ``median_survival`` (group → time),
    ``threshold``.

    Raises
    ------
    UserError
        ``quantile`` not in (0, 1); a node not in ``key``; a node whose activity is constant (or tied at its
        top) over the samples, so the split leaves one group; the errors of :func:`cox` on duration and event.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    if not 0 < quantile < 1:
        raise UserError(f"quantile must be between 0 and 1, not {quantile}")
    A = activities(adata, key)
    if node not in A.columns:
        raise UserError(f"node {node!r} not in {key}; nodes: {', '.join(A.columns[:8])}{' …' if A.shape[1] > 8 else ''}")
    surv = _survival_frame(adata, duration, event, event_value)
    ok = surv.notna().all(axis=1)
    x = A.loc[ok, node]
    thr = float(x.quantile(quantile))
    grp = pd.Series(np.where(x > thr, "high", "low"), index=x.index, name=f"{node}_group")
    if not (grp == "high").any():
        what = "constant activity" if x.nunique() < 2 else f"its top activity in over {1 - quantile:.0%} of samples"
        raise UserError(f"node {node!r} has {what} ({thr:g}), so a split at quantile {quantile} has one group: "
                        "pick another node")
    fitters, med = {}, {}
    for g in ("low", "high"):
        sel = grp == g
        kmf = KaplanMeierFitter(label=f"{node} {g} (n={int(sel.sum())})")
        kmf.fit(surv.loc[grp.index[sel], "T"], surv.loc[grp.index[sel], "E"])
        fitters[g] = kmf
        med[g] = float(kmf.median_survival_time_)
    hi, lo = grp == "high", grp == "low"
    lr = logrank_test(surv.loc[grp.index[hi], "T"], surv.loc[grp.index[lo], "T"],
                      surv.loc[grp.index[hi], "E"], surv.loc[grp.index[lo], "E"])
    return {"groups": grp, "fitters": fitters, "threshold": thr, "median_survival": med,
            "logrank": {"statistic": float(lr.test_statistic), "pvalue": float(lr.p_value)}}


__all__ = ["activities", "associate", "cox", "km_split"]
