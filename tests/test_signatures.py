"""Signatures: the ADAGE read-out, the varimax rotation, planted-module recovery, ensembles, projection, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import genodae
from genodae import UserError
from genodae import signatures as S
from genodae.cli import main as cli_main
from genodae.synthetic import planted_programs

torch.set_num_threads(1)


def _sparse_loadings(n_genes=120, k=4, size=12, seed=0):
    rng = np.random.default_rng(seed)
    L = rng.normal(0, 0.02, size=(n_genes, k))
    genes = rng.permutation(n_genes)
    for j in range(k):
        L[genes[j * size : (j + 1) * size], j] += rng.uniform(0.5, 1.0, size)
    return L, [set(genes[j * size : (j + 1) * size]) for j in range(k)]


def _random_rotation(k, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))
    return q


# --- the read-out ----------------------------------------------------------------------------------------


def test_high_weight_genes_splits_tails_at_the_cutoff():
    rng = np.random.default_rng(0)
    W = pd.DataFrame(rng.normal(0, 1, size=(200, 2)), index=[f"g{i}" for i in range(200)], columns=["a", "b"])
    W.iloc[:3, 0] = [10, 9, 8]
    W.iloc[3:5, 0] = [-9, -10]
    t = S.high_weight_genes(W, sd_cutoff=2.5)
    pos = t[(t.node == "a") & (t.direction == "pos")]
    neg = t[(t.node == "a") & (t.direction == "neg")]
    assert pos.gene.tolist()[:3] == ["g0", "g1", "g2"] and pos["rank"].tolist()[:3] == [1, 2, 3]
    assert neg.gene.tolist()[:2] == ["g4", "g3"]
    col = W["a"]
    z = (col - col.mean()) / col.std(ddof=0)
    assert np.allclose(t.set_index(["node", "gene"]).loc["a"].zscore, z[t[t.node == "a"].gene].to_numpy())
    assert (t.zscore.abs() > 2.5).all() and t.beyond_cutoff.all()
    # min_genes fills a tail with flagged genes
    t2 = S.high_weight_genes(W, sd_cutoff=2.5, min_genes=6)
    pos2 = t2[(t2.node == "a") & (t2.direction == "pos")]
    assert len(pos2) == 6 and pos2.beyond_cutoff.sum() == len(pos)
    with pytest.raises(UserError):
        S.high_weight_genes(W, sd_cutoff=0)


def test_varimax_undoes_a_rotation_of_sparse_loadings():
    L, mods = _sparse_loadings()
    mixed = L @ _random_rotation(4)
    R = S.varimax(mixed)
    assert np.allclose(R @ R.T, np.eye(4), atol=1e-8)
    C = np.abs(S._corr_cols(mixed @ R, L))
    assert (C.max(axis=0) > 0.99).all()
    # the mixed loadings themselves do not single out modules
    assert (np.abs(S._corr_cols(mixed, L)).max(axis=0) < 0.95).any()


@pytest.mark.parametrize("method", ["sparse", "varimax"])
def test_rotate_keeps_reconstruction_and_adds_keys(method):
    rng = np.random.default_rng(0)
    L, _ = _sparse_loadings()
    a = genodae.synthetic.planted_programs(n_cells=50, n_genes=120, n_programs=2, module_size=5)
    W = L @ _random_rotation(4)
    W[::7] = 0  # genes the model did not use stay zero rows
    a.varm["dae_weights"] = W
    a.obsm["X_dae"] = rng.normal(size=(50, 4))
    genodae.tl.rotate(a, readout="weights", **({} if method == "sparse" else {"method": method}))
    Wr, Zr = a.varm[f"dae_{method}_weights"], a.obsm[f"X_dae_{method}"]
    # the weights read-out: weights W T, activities Z T⁻ᵀ (= Z T for orthogonal varimax), so Z Wᵀ is kept
    assert np.allclose(Zr @ Wr.T, a.obsm["X_dae"] @ W.T, atol=1e-4)
    L[::7] = 0
    assert np.abs(S._corr_cols(Wr, L)).max(axis=0).min() > 0.99  # each node one of the sparse columns again
    assert (Wr[::7] == 0).all()
    assert list(a.uns[f"dae_{method}"]["node_names"]) == ["vnode0", "vnode1", "vnode2", "vnode3"]


@pytest.mark.parametrize("method", ["sparse", "varimax"])
def test_correlation_readout_is_gene_activity_correlation(trained, method):
    a = trained.copy()
    genodae.tl.rotate(a, method=method)
    Z = a.obsm[f"X_dae_{method}"].astype(np.float64)
    C = np.cov(Z, rowvar=False, bias=True)
    np.testing.assert_allclose(np.diag(C), 1.0, atol=1e-4)  # unit variance (whitened, unit-length rotation)
    if method == "varimax":
        assert np.allclose(C, np.eye(Z.shape[1]), atol=1e-4)  # and uncorrelated
    X = a.X.toarray()
    W = a.varm[f"dae_{method}_weights"]
    for g in (0, 17, 101):
        for j in range(Z.shape[1]):
            assert W[g, j] == pytest.approx(np.corrcoef(X[:, g], Z[:, j])[0, 1], abs=1e-4)
    t = a.uns[f"dae_{method}"]
    assert np.allclose(S.apply_transform(a.obsm["X_dae"], t), Z, atol=1e-4)
    with pytest.raises(UserError, match="readout"):
        genodae.tl.rotate(a, readout="nope")


# --- recovery of planted modules by a trained model ------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    a = planted_programs(n_cells=400, n_genes=200, n_programs=3, module_size=10, effect=1.5, seed=0)
    genodae.pp.prepare(a, n_top_genes=0)
    for s in range(2):
        genodae.tl.dae(a, preset="signatures", n_latent=5, epochs=100, seed=s, num_threads=1,
                       key_added="dae" if s == 0 else f"dae_s{s}")
    return a


def test_signatures_recover_planted_modules(trained):
    a = trained.copy()
    mods = {k: list(v) for k, v in a.uns["synthetic"]["modules"].items()}
    table = genodae.tl.signatures(a)
    assert "dae_sparse_signatures" in a.uns and table.attrs["key"] == "dae_sparse"
    assert set(table.columns) >= {"node", "direction", "gene", "weight", "zscore", "rank"}
    rec = S.module_recovery(S.gene_weights(a, "dae_sparse"), mods)
    assert rec["auroc"].min() > 0.93 and rec["auroc"].mean() > 0.96, rec
    assert rec["f1"].mean() > 0.6, rec
    assert rec["precision"].mean() > 0.9, rec
    # each module is found by a different signature (node tail; one node may carry two modules in its tails)
    assert rec["sig_node"].nunique() == len(mods)
    # random weights (a broken read-out) do not pass the same bar
    rnd = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 5)), index=a.var_names)
    bad = S.module_recovery(rnd, mods)
    assert bad["auroc"].min() < 0.93 and bad["f1"].mean() < 0.6


def test_signatures_without_rotation_read_raw_nodes(trained):
    a = trained.copy()
    t = genodae.tl.signatures(a, rotation="none", sd_cutoff=2.0)
    assert "dae_signatures" in a.uns and set(t["node"].astype(str)) <= {f"node{i}" for i in range(5)}
    with pytest.raises(UserError, match="varm"):
        genodae.tl.signatures(a, key="nope")


def test_stability_and_consensus_on_planted_loadings():
    L, _ = _sparse_loadings(k=4)
    rng = np.random.default_rng(3)
    genes = [f"g{i}" for i in range(L.shape[0])]
    models = []
    for _ in range(3):
        perm = rng.permutation(4)
        sign = rng.choice([-1, 1], 4)
        noise_node = rng.normal(size=(L.shape[0], 1))  # one node unique to each model
        W = np.hstack([L[:, perm] * sign + rng.normal(0, 0.02, L.shape), noise_node])
        models.append(pd.DataFrame(W, index=genes))
    st = S.stability(models)
    assert len(st) == 3 and st["stability"].between(0.7, 1.0).all()
    assert S.best_match_correlation(L, L[:, ::-1] * -1) == pytest.approx(1.0)
    res = S.consensus(models, embeddings=[rng.normal(size=(30, 5)) for _ in range(3)])
    Wc = res["weights"]
    assert Wc.shape == (len(genes), 4)  # the unique noise nodes have support 1 < majority: dropped
    assert (res["support"] == 3).all()
    assert (np.abs(S._corr_cols(Wc.to_numpy(), L)).max(axis=0) > 0.99).all()
    assert res["embedding"].shape == (30, 4)
    assert set(res["members"]["cluster"]) == set(Wc.columns)
    with pytest.raises(UserError):
        S.consensus(models[:1])


def test_consensus_never_merges_two_nodes_of_one_model():
    """A model's two near-copy nodes (|r| 0.8: they share a core, each has a tail of its own) are reproduced by every
    model. Plain average linkage at the 0.6 cut chains all of them into one consensus node; one node per model keeps
    the two programs apart, each with the full support."""
    rng = np.random.default_rng(0)
    n = 2000
    core, tail_a, tail_b = rng.normal(size=(3, n))
    a, b = core + 0.5 * tail_a, core + 0.5 * tail_b  # corr(a, b) = 0.8
    genes = [f"g{i}" for i in range(n)]
    models = [pd.DataFrame(np.column_stack([a + 0.2 * rng.normal(size=n), b + 0.2 * rng.normal(size=n)]),
                           index=genes) for _ in range(4)]
    res = S.consensus(models, min_corr=0.6)
    assert res["weights"].shape[1] == 2 and (res["support"] == 4).all()
    assert (res["near_copy_of"] == "").all()  # |r| 0.8: variants, not copies
    assert res["members"].groupby("cluster")["model"].apply(lambda m: m.is_unique).all()
    r = S._corr_cols(res["weights"].to_numpy(), np.column_stack([a, b]))
    assert np.abs(r).max(axis=0).min() > 0.99  # each program has its own consensus node
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    X = np.concatenate([m.to_numpy() for m in models], axis=1)
    D = np.clip(1 - np.abs(np.corrcoef(X.T)), 0, None)
    np.fill_diagonal(D, 0)
    assert len(set(fcluster(linkage(squareform(D, checks=False), "average"), t=0.4, criterion="distance"))) == 1


def test_consensus_marks_near_copies_and_tl_ensemble_stores_the_mark():
    """Two programs at |r| ≈ 0.95 found by every model stay two consensus nodes (one node per model), and the less
    supported (here: the second) is marked as a near copy of the first; a third, unrelated program is not."""
    rng = np.random.default_rng(2)
    n = 2000
    core, tail, other = rng.normal(size=(3, n))
    a, b = core, core + 0.33 * tail  # corr ≈ 0.95
    genes = [f"g{i}" for i in range(n)]
    models = [pd.DataFrame(np.column_stack([x + 0.1 * rng.normal(size=n) for x in (a, b, other)]), index=genes)
              for _ in range(3)]
    res = S.consensus(models, min_corr=0.6)
    assert res["weights"].shape[1] == 3
    marked = res["near_copy_of"][res["near_copy_of"] != ""]
    assert len(marked) == 1 and marked.iloc[0] in res["weights"].columns and marked.index[0] != marked.iloc[0]
    r = S._corr_cols(res["weights"][[marked.index[0]]].to_numpy(), res["weights"][[marked.iloc[0]]].to_numpy())
    assert abs(r[0, 0]) >= 0.9


def test_one_node_per_model_clusters_is_average_linkage_when_no_model_repeats():
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from genodae.kernels import one_node_per_model_clusters

    rng = np.random.default_rng(1)
    for _ in range(10):
        k = int(rng.integers(2, 40))
        X = rng.normal(size=(60, k)) + rng.normal(size=(60, 1)) * rng.uniform(0, 2)
        D = np.clip(1 - np.abs(np.corrcoef(X.T)), 0, None)
        np.fill_diagonal(D, 0)
        ours = one_node_per_model_clusters(D, np.arange(k), max_dist=0.4)
        scipy_ = fcluster(linkage(squareform(D, checks=False), "average"), t=0.4, criterion="distance")
        as_sets = [{frozenset(np.flatnonzero(lab == c)) for c in np.unique(lab)} for lab in (ours, scipy_)]
        assert as_sets[0] == as_sets[1]


def test_one_node_per_model_clusters_edges():
    from genodae.kernels import one_node_per_model_clusters

    assert one_node_per_model_clusters(np.zeros((3, 3)), [0, 0, 0], max_dist=np.inf).tolist() == [1, 2, 3]  # ends
    assert one_node_per_model_clusters(np.zeros((0, 0)), [], max_dist=0.5).tolist() == []
    D = np.full((4, 4), 0.1)
    np.fill_diagonal(D, 0)
    D[2, 3] = D[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):  # not a silent stop
        one_node_per_model_clusters(D, [0, 1, 2, 3], max_dist=0.5)
    L, _ = _sparse_loadings(k=3)
    models = [pd.DataFrame(L + 0.01 * np.random.default_rng(i).normal(size=L.shape)) for i in range(3)]
    models[1].iloc[4, 2] = np.nan
    with pytest.raises(UserError, match=r"the weights of model\(s\) 1 \(counting from 0\) hold NaN"):
        S.consensus(models)


def test_ensemble_of_two_seeds(trained):
    a = trained.copy()
    genodae.tl.ensemble(a, keys=["dae", "dae_s1"], key_added="ens")
    W = a.varm["ens_weights"]
    assert W.shape[0] == a.n_vars and W.shape[1] >= 3
    assert a.obsm["X_ens"].shape == (a.n_obs, W.shape[1])
    assert (a.uns["ens"]["support"]["support"] >= 1).all()
    mods = {k: list(v) for k, v in a.uns["synthetic"]["modules"].items()}
    rec = S.module_recovery(S.gene_weights(a, "ens"), mods)
    assert rec["auroc"].mean() > 0.9
    t = genodae.tl.signatures(a, key="ens", rotation="none")
    assert set(t["node"].astype(str)) <= set(a.uns["ens"]["node_names"])
    # the consensus nodes' signatures name the near copies, as the support table does
    marks = a.uns["ens"]["support"]["near_copy_of"]
    assert (t["near_copy_of"].astype(str).to_numpy() == marks.loc[t["node"].astype(str)].to_numpy()).all()
    node = str(t["node"].iloc[0])
    other = next(n for n in a.uns["ens"]["node_names"] if n != node)
    a.uns["ens"]["support"].loc[node, "near_copy_of"] = other
    t = genodae.tl.signatures(a, key="ens", rotation="none")
    assert set(t.loc[t["node"].astype(str) == node, "near_copy_of"]) == {other}
    assert set(t.loc[t["node"].astype(str) != node, "near_copy_of"]) <= set(marks) | {""}
    assert "near_copy_of" not in genodae.tl.signatures(a).columns  # a model's own nodes: no such column


def test_ensemble_again_under_its_key_replaces_what_was_read_from_it(trained):
    """A second tl.ensemble under the same key_added drops the first one's signature and enrichment tables and
    rotations (tl.enrich would otherwise test the old nodes' signatures silently); near_copy_of reaches the
    enrichment table; key_added may not be a member's rotation."""
    a = trained.copy()
    genodae.tl.ensemble(a, keys=["dae", "dae_s1"], key_added="ens")
    genodae.tl.signatures(a, key="ens", rotation="none")
    genes = list(a.var_names[:40])
    res = genodae.tl.enrich(a, gene_sets={"setA": genes[:20], "setB": genes[20:]}, key="ens", min_size=2)
    assert "near_copy_of" in res.columns and set(res["near_copy_of"]) <= set(a.uns["ens"]["node_names"]) | {""}
    genodae.tl.signatures(a, key="ens")  # a rotation of the ensemble, with its own table
    genodae.tl.signatures(a, key="ens", rotation="none", key_added="ens_custom_table")
    assert {"ens_signatures", "ens_enrichment", "ens_sparse", "ens_sparse_signatures", "ens_custom_table"} <= set(a.uns)
    genodae.tl.ensemble(a, keys=["dae", "dae_s1"], key_added="ens", min_corr=0.95, min_support=1)
    assert not {"ens_signatures", "ens_enrichment", "ens_sparse", "ens_sparse_signatures",
                "ens_custom_table"} & set(a.uns)
    assert "ens_sparse_weights" not in a.varm and "dae_sparse" in a.uns  # the members' rotations stay
    assert a.uns["ens"]["min_corr"] == 0.95
    t = genodae.tl.signatures(a, key="ens", rotation="none")
    assert set(t["node"].astype(str)) <= set(a.uns["ens"]["node_names"])
    # a support table with missing marks (e.g. edited by hand) reads as "no copy", not "nan"
    a.uns["ens"]["support"]["near_copy_of"] = np.nan
    assert set(genodae.tl.signatures(a, key="ens", rotation="none")["near_copy_of"]) == {""}
    with pytest.raises(UserError, match="is a rotation of a model"):
        genodae.tl.ensemble(a, keys=["dae", "dae_s1"], key_added="dae_sparse")


def test_retraining_a_member_warns_that_its_ensemble_stays(trained, caplog):
    a = trained.copy()
    genodae.tl.ensemble(a, keys=["dae", "dae_s1"], key_added="ens")
    with caplog.at_level("WARNING", logger="genodae"):
        genodae.tl.dae(a, preset="signatures", n_latent=5, epochs=5, seed=7, num_threads=1, key_added="dae_plain")
    assert "member of the ensemble" not in caplog.text  # not a member
    with caplog.at_level("WARNING", logger="genodae"):
        genodae.tl.dae(a, preset="signatures", n_latent=5, epochs=5, seed=7, num_threads=1, key_added="dae_s1")
    assert "'dae_s1' before is a member of the ensemble(s) 'ens'" in caplog.text
    assert "ens_weights" in a.varm  # kept: a model of its own


def test_consensus_cut_default_and_by_rotation(trained):
    # three models share one node only loosely (pairwise |r| about 0.55): one cluster at 0.5, none at the default 0.6
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(2000)]
    shared = rng.normal(size=2000)
    models = [pd.DataFrame(np.c_[shared + rng.normal(0, 0.9, 2000), rng.normal(size=(2000, 2))], index=genes)
              for _ in range(3)]
    r = np.corrcoef([m[0] for m in models])[np.triu_indices(3, 1)]
    assert ((r > 0.5) & (r < 0.6)).all()
    assert S.consensus(models, min_corr=0.5)["weights"].shape[1] == 1
    assert S.consensus(models)["weights"].shape[1] == 0  # default: config.ENSEMBLE_MIN_CORR["sparse"]
    assert genodae.config.ENSEMBLE_MIN_CORR == {"sparse": 0.6, "varimax": 0.5, "none": 0.5}
    # tl.ensemble picks the cut by rotation and records it; an explicit min_corr wins
    # ("none": the nodes as stored, here the signatures-preset models' sparse nodes, or already-rotated keys)
    for keys, rotation, min_corr, expected in (
            (["dae", "dae_s1"], "sparse", None, 0.6), (["dae", "dae_s1"], "varimax", None, 0.5),
            (["dae", "dae_s1"], "varimax", 0.7, 0.7), (["dae", "dae_s1"], "none", None, 0.6),
            (["dae_varimax", "dae_s1_varimax"], "none", None, 0.5), (["dae_varimax", "dae_s1"], "none", None, 0.5)):
        a = trained.copy()
        for k in ("dae", "dae_s1"):
            genodae.tl.rotate(a, key=k, method="varimax")
        genodae.tl.ensemble(a, keys=keys, rotation=rotation, min_corr=min_corr, key_added="ens")
        assert a.uns["ens"]["min_corr"] == expected, (keys, rotation)
    assert trained.uns["dae"]["params"]["rotation"] == "sparse"
    with pytest.raises(UserError, match="rotation must be one of"):
        genodae.tl.ensemble(trained.copy(), keys=["dae", "dae_s1"], rotation="promax")


def test_score_projects_new_samples_like_the_training_data(trained, tmp_path):
    a = trained.copy()
    model = genodae.DAE(preset="signatures", n_latent=4, epochs=5, num_threads=1).fit(a)
    model.save(tmp_path / "m")
    model.annotate(a)
    genodae.tl.signatures(a)
    raw = a.copy()  # new samples: the same cells as raw counts
    raw.X = raw.layers["counts"]
    raw.uns.pop("genodae_prepare")
    act = genodae.tl.score(raw[:20].copy(), model=tmp_path / "m", transform=a.uns["dae_sparse"])
    assert list(act.columns) == [f"vnode{i}" for i in range(4)]
    assert np.allclose(act.to_numpy(), a.obsm["X_dae_sparse"][:20], atol=1e-3)
    # without the transform: the weights read-out, which depends on the model only
    genodae.tl.rotate(a, readout="weights", key_added="w")
    act_w = genodae.tl.score(raw[:20].copy(), model=tmp_path / "m")
    assert np.allclose(act_w.to_numpy(), a.obsm["X_w"][:20], atol=1e-3)
    # a transform of one rotation is not applied under the name of another
    with pytest.raises(UserError, match="transform is of the sparse rotation"):
        genodae.tl.score(raw[:5].copy(), model=tmp_path / "m", transform=a.uns["dae_sparse"], rotation="varimax")
    with pytest.raises(UserError, match="rotation must be one of"):
        genodae.tl.score(raw[:5].copy(), model=tmp_path / "m", rotation="promax")


def test_correlation_readout_of_activities_that_do_not_span_the_nodes(trained, caplog):
    a = trained.copy()
    Z = np.asarray(a.obsm["X_dae"]).copy()
    Z[:, 1] = Z[:, 0]  # two nodes move together: 4 directions for 5 nodes
    a.obsm["X_dae"] = Z
    with caplog.at_level("WARNING", logger="genodae"):
        genodae.tl.rotate(a)
    assert "span only 4 of 5 directions" in caplog.text
    W, E = a.varm["dae_sparse_weights"], a.obsm["X_dae_sparse"].astype(np.float64)
    assert np.abs(W[:, 4]).max() == 0 and np.abs(E[:, 4]).max() < 1e-6  # one empty node
    X = a.X.toarray()
    for g in (0, 17, 101):  # the other four: correlations with their activities, as on full rank
        for j in range(4):
            assert W[g, j] == pytest.approx(np.corrcoef(X[:, g], E[:, j])[0, 1], abs=1e-4)
    genodae.tl.rotate(a, readout="weights")  # the decoder weights need no whitening
    assert "dae_sparse_weights" in a.varm
    # nodes of very different spread (and nearly dependent ones, as correlated sparse nodes can be) still span
    b = trained.copy()
    Z = np.asarray(b.obsm["X_dae"], dtype=np.float64).copy()
    Z[:, 0] *= 1e-3
    Z[:, 2] = Z[:, 1] + 1e-3 * Z[:, 2]
    b.obsm["X_dae"] = Z.astype(np.float32)
    genodae.tl.rotate(b)
    assert np.isfinite(b.varm["dae_sparse_weights"]).all()


# --- CLI ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("emb")
    a = trained.copy()
    a.write_h5ad(d / "s0.h5ad")
    b = trained.copy()
    b.varm["dae_weights"], b.obsm["X_dae"] = b.varm["dae_s1_weights"], b.obsm["X_dae_s1"]
    b.uns["dae"] = b.uns["dae_s1"]
    b.write_h5ad(d / "s1.h5ad")
    return d


def test_cli_signatures_ensemble_and_sweep(embedded, tmp_path):
    out = tmp_path / "sig.tsv"
    assert cli_main(["-q", "signatures", str(embedded / "s0.h5ad"), "-o", str(out), "--weights",
                     str(tmp_path / "w.tsv"), "--embedding", str(tmp_path / "e.tsv"),
                     "--heatmap", str(tmp_path / "h.png")]) == 0
    t = pd.read_csv(out, sep="\t")
    assert {"node", "direction", "gene", "weight", "zscore"} <= set(t.columns) and len(t)
    assert pd.read_csv(tmp_path / "w.tsv", sep="\t", index_col=0).shape == (200, 5)
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert cli_main(["-q", "signatures", str(embedded / "s0.h5ad"), "-o", str(out), "--transform",
                     str(tmp_path / "t.json")]) == 0
    import json

    assert json.loads((tmp_path / "t.json").read_text())["node_names"][0] == "vnode0"
    assert cli_main(["-q", "ensemble", str(embedded / "s0.h5ad"), str(embedded / "s1.h5ad"), "-o",
                     str(tmp_path / "cons.tsv"), "--support", str(tmp_path / "sup.tsv"), "--stability",
                     str(tmp_path / "stab.tsv"), "--h5ad", str(tmp_path / "cons.h5ad")]) == 0
    # the workflow's ensemble_signatures: the consensus read as it is, near copies named in the table
    assert cli_main(["-q", "signatures", str(tmp_path / "cons.h5ad"), "-o", str(tmp_path / "ens_sig.tsv"),
                     "--key", "dae_ensemble", "--rotation", "none"]) == 0
    ens = pd.read_csv(tmp_path / "ens_sig.tsv", sep="\t", keep_default_na=False)
    sup = pd.read_csv(tmp_path / "sup.tsv", sep="\t", keep_default_na=False)
    assert "near_copy_of" in ens.columns and set(ens["near_copy_of"]) <= set(sup["near_copy_of"])
    assert pd.read_csv(tmp_path / "cons.tsv", sep="\t", index_col=0).shape[1] >= 3
    assert {"model", "node", "cluster", "support", "near_copy_of"} <= set(pd.read_csv(tmp_path / "sup.tsv",
                                                                                       sep="\t").columns)
    assert cli_main(["-q", "sweep-summary", str(embedded / "s0.h5ad"), str(embedded / "s1.h5ad"), "-o",
                     str(tmp_path / "sweep.tsv"), "--plot", str(tmp_path / "sweep.png")]) == 0
    sw = pd.read_csv(tmp_path / "sweep.tsv", sep="\t")
    assert sw["n_latent"].tolist() == [5] and 0 < sw["stability"].iloc[0] <= 1


def test_cli_user_errors_exit_2_with_one_line(embedded, tmp_path, capsys):
    out = tmp_path / "sig.tsv"
    assert cli_main(["signatures", str(embedded / "s0.h5ad"), "-o", str(out), "--key", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and not out.exists()
    assert cli_main(["ensemble", str(embedded / "s0.h5ad"), "-o", str(out)]) == 2
    assert "at least 2" in capsys.readouterr().err and not out.exists()
    assert cli_main(["signatures", str(tmp_path / "missing.h5ad"), "-o", str(out)]) == 2
    assert not out.exists()


def test_cli_signatures_with_no_gene_beyond_the_cutoff_still_succeeds(embedded, tmp_path):
    """The TSVs are written before the heatmap: an empty signature must give a note figure, not exit 2."""
    out = tmp_path / "sig.tsv"
    png = tmp_path / "heat.png"
    assert cli_main(["-q", "signatures", str(embedded / "s0.h5ad"), "-o", str(out), "--sd-cutoff", "50",
                     "--heatmap", str(png)]) == 0
    assert out.exists() and png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_correlation_read_out_refuses_raw_counts_in_x():
    """A model annotated onto raw counts (genodae embed of a raw file) embeds them correctly, but correlating
    the nodes with raw counts instead of the model input would give other signatures: refused, with the fix."""
    a = planted_programs(n_cells=200, n_genes=120, n_programs=2, module_size=10, seed=0)
    raw = a.copy()
    p = genodae.pp.prepare(a, copy=True)
    model = genodae.DAE(n_latent=4, epochs=3, num_threads=1).fit(p)
    model.annotate(raw)
    before = raw.X.copy()
    with pytest.raises(UserError, match="raw counts.*genodae.pp.prepare"):
        genodae.tl.signatures(raw)
    assert (raw.X != before).nnz == 0 if hasattr(before, "nnz") else np.array_equal(raw.X, before)
    assert len(genodae.tl.signatures(raw, readout="weights"))  # no data needed
    model.annotate(p)
    assert len(genodae.tl.signatures(p))
