"""The planted-program generator: its truth must be what the counts show."""

from __future__ import annotations

import numpy as np
import pytest

from genodae import UserError
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
