"""The planted-program generator: its truth must be what the counts show."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from genodae import UserError, synthetic
from genodae.synthetic import planted_programs, planted_survival


def test_shapes_truth_and_counts():
    a = planted_programs(n_cells=120, n_genes=80, n_programs=3, module_size=10, seed=1)
    assert a.shape == (120, 80)
    X = a.X.toarray()
    assert np.all(X >= 0) and np.all(X == np.round(X))
    assert list(a.obs["program"].cat.categories) == ["P0", "P1", "P2"]
    assert a.obsm["program_activity"].shape == (120, 3)
    M = a.varm["module_membership"]
    assert M.shape == (80, 3) and M.sum() == 30 and M.sum(axis=1).max() == 1  # disjoint modules
    mods = a.uns["synthetic"]["modules"]
    assert set(mods) == {"P0", "P1", "P2"}
    for k, name in enumerate(["P0", "P1", "P2"]):
        assert set(mods[name]) == set(a.var_names[M[:, k]])
        assert set(mods[name]) == set(a.var_names[a.var["module"] == name])
    # module genes are not simply the first ones
    assert not M[:30].all()


def test_groups_express_their_module():
    a = planted_programs(n_cells=300, n_genes=100, n_programs=3, module_size=10, effect=1.0, seed=2)
    X = np.log1p(a.X.toarray())
    for k, name in enumerate(["P0", "P1", "P2"]):
        genes = a.varm["module_membership"][:, k]
        inside = (a.obs["program"] == name).to_numpy()
        assert X[np.ix_(inside, genes)].mean() > X[np.ix_(~inside, genes)].mean() + 0.3
        none = (a.var["module"] == "none").to_numpy()
        assert abs(X[np.ix_(inside, none)].mean() - X[np.ix_(~inside, none)].mean()) < 0.1


def test_negative_genes_go_down_and_seed_is_reproducible():
    a = planted_programs(n_cells=300, n_genes=60, n_programs=2, module_size=10, negative_fraction=0.5,
                         effect=1.0, mean_log_expression=1.5, seed=3)
    b = planted_programs(n_cells=300, n_genes=60, n_programs=2, module_size=10, negative_fraction=0.5,
                         effect=1.0, mean_log_expression=1.5, seed=3)
    assert (a.X != b.X).nnz == 0
    X = np.log1p(a.X.toarray())
    down = (a.var["module"] == "P0").to_numpy() & (a.var["module_sign"] < 0).to_numpy()
    assert down.sum() == 5
    inside = (a.obs["program"] == "P0").to_numpy()
    assert X[np.ix_(inside, down)].mean() < X[np.ix_(~inside, down)].mean() - 0.2


@pytest.mark.parametrize("kw", [dict(n_genes=10, n_programs=3, module_size=5), dict(n_programs=0),
                                dict(negative_fraction=1.5), dict(n_cells=2, n_programs=3)])
def test_bad_arguments_are_user_errors(kw):
    with pytest.raises(UserError):
        planted_programs(**kw)


def test_planted_survival_hazard_follows_activity():
    rng = np.random.default_rng(0)
    act = rng.normal(size=2000)
    s = planted_survival(act, log_hazard_ratio=1.0, censor_rate=0.0, max_time=1e9, seed=0)
    assert s["event"].all()
    hi = act > np.median(act)
    assert s.loc[hi, "time"].median() < 0.5 * s.loc[~hi, "time"].median()


# --- program_mixture: the generators of the signature benchmark ----------------------------------------------


def test_program_mixture_plants_modules_of_the_sizes_asked_with_shared_genes():
    a = synthetic.program_mixture(n_cells=200, n_genes=300, module_sizes=(10, 20, 40), overlap=0.25, seed=3)
    member = a.varm["module_membership"]
    assert member.sum(axis=0).tolist() == [10, 20, 40]
    assert (member[:, 0] & member[:, 1]).sum() == round(0.25 * 10)  # module k shares genes with module k+1
    assert (member[:, 1] & member[:, 2]).sum() == round(0.25 * 20)
    assert sp.issparse(a.X) and np.all(a.X.data == np.round(a.X.data))
    assert [len(v) for v in a.uns["synthetic"]["modules"].values()] == [10, 20, 40]


def test_program_mixture_program_genes_follow_their_activity():
    """A module gene's log expression rises with its program's activity; a gene in no module does not."""
    a = synthetic.program_mixture(n_cells=2000, n_genes=200, module_sizes=(20, 20), activity="continuous",
                                  effect=1.0, mean_log_expression=1.0, seed=0)
    X = np.log1p(a.X.toarray())
    act = a.obsm["program_activity"][:, 0]
    member = a.varm["module_membership"][:, 0]
    r = np.array([np.corrcoef(X[:, j], act)[0, 1] for j in range(a.n_vars)])
    assert r[member].mean() > 0.3
    assert np.abs(r[~a.varm["module_membership"].any(axis=1)]).max() < 0.15


def test_program_mixture_modes_dropout_and_bulk():
    groups = synthetic.program_mixture(n_cells=300, n_genes=300, activity="groups", seed=1)
    act = groups.obsm["program_activity"]
    assert np.all(act.argmax(axis=1) == groups.obs["program"].cat.codes)  # one strong program per cell
    mixed = synthetic.program_mixture(n_cells=300, n_genes=300, activity="mixed", seed=1)
    assert (mixed.obsm["program_activity"][:, 3:] > 0).all()  # the continuous half: every cell has some
    drop = synthetic.program_mixture(n_cells=300, n_genes=300, dropout=0.5, seed=1)
    full = synthetic.program_mixture(n_cells=300, n_genes=300, dropout=0.0, seed=1)
    assert drop.X.nnz < 0.6 * full.X.nnz
    bulk = synthetic.program_mixture(n_cells=50, n_genes=300, bulk=True, seed=1)
    assert isinstance(bulk.X, np.ndarray) and 2 < float(np.median(bulk.X)) < 12  # log2 intensities


@pytest.mark.parametrize("kw, msg", [
    (dict(activity="random"), "activity must be"),
    (dict(module_sizes=(1,)), ">= 2 genes"),
    (dict(overlap=1.0), "overlap"),
    (dict(n_genes=50), "more than n_genes"),
])
def test_program_mixture_refuses_impossible_settings(kw, msg):
    with pytest.raises(UserError, match=msg):
        synthetic.program_mixture(n_cells=20, **{"n_genes": 300, **kw})
