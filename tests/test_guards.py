"""Read-outs never overwrite or mix up models: key collisions, one model twice, another model's transform, the
read-outs of a model retrained under the same key, a model trained on a layer, backed raw data, outputs that
name an input (API and CLI)."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

import genodae
from genodae import tl
from genodae.cli import main
from genodae.errors import UserError
from genodae.synthetic import planted_programs


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Raw and prepared planted data with two short-trained models (keys dae_s0, dae_s1), each saved."""
    d = tmp_path_factory.mktemp("guards")
    raw = planted_programs(n_cells=200, n_genes=120, n_programs=3, module_size=10, effect=1.5, seed=0)
    a = genodae.pp.prepare(raw, n_top_genes=0, copy=True)
    for s in (0, 1):
        tl.dae(a, n_latent=5, epochs=3, seed=s, num_threads=1, key_added=f"dae_s{s}", model_dir=d / f"m{s}")
    return raw, a, d


def _keys(a):
    return set(a.uns) | set(a.varm) | set(a.obsm)


def test_transform_of_another_model_is_refused(two_models):
    raw, a, d = two_models
    a = a.copy()
    tl.signatures(a, key="dae_s0")
    tr = a.uns["dae_s0_sparse"]
    act = tl.score(raw.copy(), model=d / "m0", transform=tr)  # the model the transform was made from
    np.testing.assert_allclose(act.to_numpy(), a.obsm["X_dae_s0_sparse"], atol=1e-4)
    with pytest.raises(UserError, match="another model"):
        tl.score(raw.copy(), model=d / "m1", transform=tr)
    with pytest.raises(UserError, match="rotation='none'"):
        tl.score(raw.copy(), model=d / "m0", rotation="none", transform=tr)
    with pytest.raises(UserError, match="no whitening, rotation"):
        tl.score(raw.copy(), model=d / "m0", transform={"mean": [0.0] * 5})


def test_transform_file_of_another_model_is_refused(two_models, tmp_path):
    raw, a, d = two_models
    emb = tmp_path / "emb.h5ad"
    a.write_h5ad(emb)
    raw_file = tmp_path / "raw.h5ad"
    raw.write_h5ad(raw_file)
    assert main(["signatures", str(emb), "--key", "dae_s0", "-o", str(tmp_path / "sig.tsv"),
                 "--transform", str(tmp_path / "tr.json")]) == 0
    assert main(["score", str(raw_file), str(d / "m0"), "-o", str(tmp_path / "ok.tsv"),
                 "--transform", str(tmp_path / "tr.json")]) == 0
    assert main(["score", str(raw_file), str(d / "m1"), "-o", str(tmp_path / "bad.tsv"),
                 "--transform", str(tmp_path / "tr.json")]) == 2
    assert not (tmp_path / "bad.tsv").exists()


@pytest.mark.parametrize("call", [
    lambda a: tl.rotate(a, key="dae_s0", key_added="dae_s1"),
    lambda a: tl.rotate(a, key="dae_s0", key_added="dae_s0"),
    lambda a: tl.signatures(a, key="dae_s0", key_added="dae_s1"),
    lambda a: tl.ensemble(a, keys=["dae_s0", "dae_s1"], key_added="dae_s1"),
], ids=["rotate-other", "rotate-self", "signatures", "ensemble"])
def test_key_added_never_overwrites_a_model(two_models, call):
    a = two_models[1].copy()
    before = {k: np.array(v, copy=True) for k, v in a.varm.items()}
    with pytest.raises(UserError, match="key_added"):
        call(a)
    for k, v in before.items():
        np.testing.assert_array_equal(a.varm[k], v)
    assert "params" in a.uns["dae_s1"] and "params" in a.uns["dae_s0"]


def test_ensemble_checks_members_before_writing(two_models):
    a = two_models[1].copy()
    keys = _keys(a)
    for kw, msg in [({"keys": ["dae_s0", "dae_s0"]}, "same model"),
                    ({"keys": ["dae_s0", "nope"]}, "'nope'.*not in its AnnData"),
                    ({"keys": ["dae_s0", "dae_s1"], "min_support": 0}, "min_support"),
                    ({"keys": ["dae_s0", "dae_s1"], "min_support": 3}, "min_support"),
                    ({"keys": ["dae_s0", "dae_s1"], "min_corr": 1.5}, "min_corr")]:
        with pytest.raises(UserError, match=msg):
            tl.ensemble(a, **kw)
        assert _keys(a) == keys  # nothing half-written (the rotations of the members come after the checks)
    b = a.copy()  # the same model under another key of another AnnData: still one model
    with pytest.raises(UserError, match="same model"):
        tl.ensemble([a, b], keys=["dae_s0", "dae_s0"])


def test_retraining_a_key_drops_the_old_readouts(two_models):
    a = two_models[1].copy()
    tl.signatures(a, key="dae_s0")
    tl.signatures(a, key="dae_s0", rotation="none")
    assert {"dae_s0_sparse", "dae_s0_sparse_signatures", "dae_s0_signatures"} <= set(a.uns)
    model = genodae.DAE.load(two_models[2] / "m0")
    model.annotate(a, key_added="dae_s0")  # the same model again: its read-outs stay
    assert {"dae_s0_sparse", "dae_s0_sparse_signatures", "dae_s0_signatures"} <= set(a.uns)
    tl.dae(a, n_latent=4, epochs=2, seed=7, num_threads=1, key_added="dae_s0")  # another model: they go
    left = {k for k in _keys(a) if k.startswith("dae_s0")}
    assert left == {"dae_s0", "dae_s0_weights", "dae_s0_decoder_weights"}
    assert "X_dae_s0_sparse" not in a.obsm and "dae_s1_weights" in a.varm  # the other model is untouched


def test_retraining_a_key_drops_its_rotations_under_a_custom_key_added(two_models):
    a = two_models[1].copy()
    tl.rotate(a, key="dae_s0", key_added="mine")
    tl.signatures(a, key="mine", rotation="none")
    tl.rotate(a, key="dae_s1", key_added="theirs")  # another model's rotation stays
    assert {"mine", "mine_signatures", "theirs"} <= set(a.uns) and "X_mine" in a.obsm
    model = genodae.DAE.load(two_models[2] / "m0")
    model.annotate(a, key_added="dae_s0")  # the same model again: its rotation stays
    assert "mine" in a.uns and "mine_weights" in a.varm
    tl.dae(a, n_latent=4, epochs=2, seed=7, num_threads=1, key_added="dae_s0")  # another model: it goes
    assert not {"mine", "mine_signatures"} & set(a.uns) and "X_mine" not in a.obsm and "mine_weights" not in a.varm
    assert "theirs" in a.uns and "X_theirs" in a.obsm


def test_retraining_a_key_drops_rotations_of_its_rotations_and_tables_under_custom_names(two_models, tmp_path):
    """Everything read from the old model goes, however it was named: a rotation of a rotation (and its tables),
    signature and enrichment tables under a custom key_added, also after an .h5ad round trip; another model's
    read-outs and tables stay."""
    a = two_models[1].copy()
    sets = {f"m{k}": list(a.var_names[k * 10:(k + 1) * 10]) for k in range(3)}
    tl.rotate(a, key="dae_s0", key_added="mine")
    tl.rotate(a, key="mine", key_added="mine2")
    tl.signatures(a, key="mine")  # -> mine_sparse, mine_sparse_signatures
    tl.signatures(a, key="dae_s0", key_added="mysig")
    tl.signatures(a, key="dae_s0", rotation="none", key_added="mysig_raw")
    tl.enrich(a, gene_sets=sets, key="dae_s0", min_size=2, key_added="myenr")
    tl.signatures(a, key="dae_s1", key_added="theirsig")
    a.write_h5ad(tmp_path / "a.h5ad")
    b = anndata.read_h5ad(tmp_path / "a.h5ad")
    assert b.uns["genodae_tables"]["mysig"] == "dae_s0_sparse" and b.uns["genodae_tables"]["myenr"] == "dae_s0"
    for c in (a, b):
        gone = {"mine", "mine2", "mine_sparse", "mine_sparse_signatures", "mysig", "mysig_raw", "myenr"}
        assert gone <= set(c.uns)
        genodae.DAE.load(two_models[2] / "m0").annotate(c, key_added="dae_s0")  # the same model: all stay
        assert gone <= set(c.uns)
        tl.dae(c, n_latent=4, epochs=2, seed=7, num_threads=1, key_added="dae_s0")  # another model: all go
        assert not gone & set(c.uns), gone & set(c.uns)
        assert not {"X_mine", "X_mine2", "X_mine_sparse"} & set(c.obsm)
        assert not {"mine_weights", "mine2_weights", "mine_sparse_weights"} & set(c.varm)
        assert "theirsig" in c.uns and "dae_s1_sparse" in c.uns  # another model's table and rotation stay


def test_layer_model_needs_its_layer(two_models, tmp_path):
    a = two_models[1].copy()
    a.layers["half"] = a.X * 0.5
    tl.dae(a, layer="half", n_latent=4, epochs=2, num_threads=1, key_added="h", model_dir=tmp_path / "mh")
    model = genodae.DAE.load(tmp_path / "mh")
    np.testing.assert_allclose(model.embed(a), a.obsm["X_h"], atol=1e-5)
    b = a.copy()
    del b.layers["half"]
    with pytest.raises(UserError, match=r"layers\['half'\]"):
        model.embed(b)  # before: X read silently instead


def test_backed_raw_data_gets_a_clear_error(two_models, tmp_path):
    raw, _, d = two_models
    raw.write_h5ad(tmp_path / "raw.h5ad")
    backed = anndata.read_h5ad(tmp_path / "raw.h5ad", backed="r")
    with pytest.raises(UserError, match=r"raw \(unprepared\) data is opened from disk \(backed\)"):
        tl.score(backed, model=d / "m0")
    backed.file.close()


def test_signatures_refuse_counts_put_back_into_prepared_x(two_models):
    raw, a, _ = two_models
    a = a.copy()
    a.X = raw[:, a.var_names].X.copy()
    with pytest.raises(UserError, match="raw counts"):
        tl.signatures(a, key="dae_s0")


def test_cli_outputs_never_overwrite_inputs(two_models, tmp_path):
    _, a, _ = two_models
    e0, e1 = tmp_path / "e0.h5ad", tmp_path / "e1.h5ad"
    b = a.copy()
    b.varm["dae_weights"], b.obsm["X_dae"], b.uns["dae"] = a.varm["dae_s0_weights"], a.obsm["X_dae_s0"], a.uns["dae_s0"]
    b.write_h5ad(e0)
    b.varm["dae_weights"], b.obsm["X_dae"], b.uns["dae"] = a.varm["dae_s1_weights"], a.obsm["X_dae_s1"], a.uns["dae_s1"]
    b.write_h5ad(e1)
    stamp = e0.read_bytes()
    out = tmp_path / "w.tsv"
    assert main(["ensemble", str(e0), str(e1), "-o", str(out), "--h5ad", str(e0)]) == 2  # before: e0 rewritten
    assert main(["ensemble", str(e0), str(e1), "-o", str(out), "--h5ad", str(tmp_path / "x.txt")]) == 2
    assert main(["ensemble", str(e0), str(e0), "-o", str(out)]) == 2  # one model twice
    assert main(["ensemble", str(e0), str(e1), "-o", str(out), "--support", str(out)]) == 2  # two outputs, one file
    sig = tmp_path / "sig.tsv"
    assert main(["signatures", str(e0), "-o", str(sig)]) == 0
    stamp_sig = sig.read_bytes()
    assert main(["enrich", str(e0), "--signatures", str(sig), "-o", str(sig), "--gene-sets", str(sig)]) == 2
    assert sig.read_bytes() == stamp_sig
    assert main(["sweep-summary", str(e0), str(e1), "-o", str(out), "--fdr", "5"]) == 2
    assert e0.read_bytes() == stamp and not out.exists()
    assert main(["ensemble", str(e0), str(e1), "-o", str(out), "--min-corr", "0.3"]) == 0 and out.exists()


def test_tl_enrich_uses_sd_cutoff_when_given_and_names_what_is_missing(two_models):
    a = two_models[1].copy()
    sets = {f"m{k}": list(a.var_names[k * 10:(k + 1) * 10]) for k in range(3)}
    with pytest.raises(UserError, match=r"tl.signatures\(adata, key='dae_s0', rotation='sparse'\)"):
        tl.enrich(a, gene_sets=sets, key="dae_s0_sparse")  # before: "run genodae.tl.dae first"
    tl.signatures(a, key="dae_s0")
    stored = tl.enrich(a, gene_sets=sets, key="dae_s0_sparse", min_size=2)
    wide = tl.enrich(a, gene_sets=sets, key="dae_s0_sparse", min_size=2, sd_cutoff=1.0)  # before: ignored
    assert wide["overlap"].sum() > stored["overlap"].sum()


def test_cli_reruns_into_existing_outputs_are_not_refused(two_models, tmp_path, monkeypatch):
    """Only the options that name inputs count: an output folder that exists (a rerun) or named like the key or the
    command is no input."""
    _, a, _ = two_models
    b = a.copy()
    b.varm["dae_weights"], b.obsm["X_dae"], b.uns["dae"] = a.varm["dae_s0_weights"], a.obsm["X_dae_s0"], a.uns["dae_s0"]
    b.write_h5ad(tmp_path / "e.h5ad")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the 2nd run: the folder "dae" exists, named like --key's default (refused before)
        assert main(["plot", "e.h5ad", "-o", "dae"]) == 0
    assert (tmp_path / "dae" / "umap.png").is_file()


def test_streamed_embed_drops_another_models_readouts(two_models, tmp_path):
    _, a, d = two_models
    b = a.copy()
    b.varm["dae_weights"], b.obsm["X_dae"], b.uns["dae"] = a.varm["dae_s0_weights"], a.obsm["X_dae_s0"], a.uns["dae_s0"]
    tl.signatures(b)  # dae_sparse of model 0
    b.write_h5ad(tmp_path / "e0.h5ad")
    assert main(["embed", str(tmp_path / "e0.h5ad"), str(d / "m0"), "-o", str(tmp_path / "same.h5ad")]) == 0
    assert "dae_sparse" in anndata.read_h5ad(tmp_path / "same.h5ad").uns  # the same model: kept
    assert main(["embed", str(tmp_path / "e0.h5ad"), str(d / "m1"), "-o", str(tmp_path / "other.h5ad")]) == 0
    other = anndata.read_h5ad(tmp_path / "other.h5ad")
    assert "dae_sparse" not in other.uns and "X_dae_sparse" not in other.obsm and "dae_sparse_weights" not in other.varm


def test_backed_prepared_data_with_a_layer_or_missing_genes_still_embed(two_models, tmp_path):
    _, a, _ = two_models
    a = a.copy()
    a.layers["half"] = a.X * 0.5
    tl.dae(a, layer="half", n_latent=4, epochs=2, num_threads=1, key_added="h", model_dir=tmp_path / "mh")
    a.write_h5ad(tmp_path / "p.h5ad")
    backed = anndata.read_h5ad(tmp_path / "p.h5ad", backed="r")
    np.testing.assert_allclose(genodae.DAE.load(tmp_path / "mh").embed(backed), a.obsm["X_h"], atol=1e-5)
    backed.file.close()
    a[:, 5:].copy().write_h5ad(tmp_path / "q.h5ad")
    backed = anndata.read_h5ad(tmp_path / "q.h5ad", backed="r")
    model = genodae.DAE.load(tmp_path / "mh")
    with pytest.raises(UserError, match="absent"):
        model.embed(backed)
    assert model.embed(backed, allow_missing_genes=True).shape == (a.n_obs, 4)
    backed.file.close()


def test_prepared_integer_log_values_are_no_raw_counts(two_models):
    """Integer data prepared as log values (e.g. copy-number states 0-5) are the model's input, not counts."""
    rng = np.random.default_rng(0)
    a = anndata.AnnData(rng.integers(0, 6, size=(120, 40)).astype(np.float32))
    a.var_names = [f"g{i}" for i in range(40)]
    genodae.pp.prepare(a, input_kind="log", scaling="none", n_top_genes=0)
    tl.dae(a, n_latent=3, epochs=2, num_threads=1)
    assert len(tl.signatures(a)) > 0


def test_same_network_in_another_basis_is_another_model(two_models, tmp_path, caplog):
    """The same seed trained with rotation="sparse" is the same network reporting other nodes: a transform of the
    default model's read-out is refused for it, retraining a key in the other basis drops the old read-outs, and
    an ensemble of the two is refused as one model twice (helper-38's findings). A transform without the basis in
    its fingerprint (written before 2026-12-07) is accepted for its network with a warning."""
    from genodae.get import network_fingerprint

    raw, a, d = two_models
    a = a.copy()
    tl.signatures(a, key="dae_s0")
    tr = dict(a.uns["dae_s0_sparse"])
    b = a.copy()
    tl.dae(b, n_latent=5, epochs=3, seed=0, num_threads=1, key_added="dae_sp", rotation="sparse",
           model_dir=tmp_path / "msp")
    with pytest.raises(UserError, match="another basis"):
        tl.score(raw.copy(), model=tmp_path / "msp", transform=tr)
    with pytest.raises(UserError, match="same model .one trained network, read out in two bases"):
        tl.ensemble(b, keys=["dae_s0", "dae_sp"])
    legacy = {**tr, "source_fingerprint": network_fingerprint(a.uns["dae_s0"])}
    with caplog.at_level("WARNING", logger="genodae"):
        tl.score(raw.copy(), model=d / "m0", transform=legacy)
    assert any("did not record the basis" in r.getMessage() for r in caplog.records)
    # retraining dae_s0 in the sparse basis (same seed, same network): its old read-outs are another model's
    tl.dae(b, n_latent=5, epochs=3, seed=0, num_threads=1, key_added="dae_s0", rotation="sparse")
    assert "dae_s0_sparse_signatures" not in b.uns and "dae_s0_sparse" not in b.uns


def test_another_readout_under_the_same_key_drops_its_tables(two_models):
    """tl.rotate with another read-out under a key that has signature and enrichment tables: the tables go (they
    were read from the weights replaced), so tl.enrich does not test them as the new read-out's."""
    _, a, _ = two_models
    a = a.copy()
    tl.signatures(a, key="dae_s0")
    a.uns["dae_s0_sparse_enrichment"] = {"placeholder": 1}
    tl.rotate(a, key="dae_s0", readout="correlation")  # the same read-out again: the tables stay
    assert "dae_s0_sparse_signatures" in a.uns and "dae_s0_sparse_enrichment" in a.uns
    tl.rotate(a, key="dae_s0", readout="weights")
    assert "dae_s0_sparse_signatures" not in a.uns and "dae_s0_sparse_enrichment" not in a.uns


def test_whole_number_arguments_are_checked(two_models):
    _, a, _ = two_models
    a = a.copy()
    with pytest.raises(UserError, match="min_genes must be a whole number"):
        tl.signatures(a, key="dae_s0", min_genes=1.5)
    with pytest.raises(UserError, match="min_support must be a whole number"):
        tl.ensemble(a, keys=["dae_s0", "dae_s1"], min_support=1.5)


def test_ensemble_enrichment_read_from_the_weights_keeps_near_copy_of(two_models):
    """tl.enrich of an ensemble without a stored signatures table reads the table from the consensus weights and
    still carries near_copy_of (as the table of tl.signatures does)."""
    _, a, _ = two_models
    a = a.copy()
    tl.ensemble(a, keys=["dae_s0", "dae_s1"], min_support=1)
    genes = list(map(str, a.var_names))
    res = tl.enrich(a, gene_sets={f"S{i}": genes[i * 10:(i + 1) * 10] for i in range(10)}, key="dae_ensemble",
                    min_size=3)
    assert "near_copy_of" in res.columns and len(res)


def test_rotations_of_one_network_are_one_model_and_legacy_readouts_survive_reembedding(two_models):
    """helper-39: rotated keys of one model are that model's network (an ensemble of them is refused); a read-out
    saved before the basis was fingerprinted is kept when the same model embeds the AnnData again."""
    from genodae.get import network_fingerprint
    from genodae.model import DAE

    _, a, d = two_models
    a = a.copy()
    tl.rotate(a, key="dae_s0", method="sparse")
    tl.rotate(a, key="dae_s0", method="varimax")
    with pytest.raises(UserError, match="read out in two bases"):
        tl.ensemble(a, keys=["dae_s0_sparse", "dae_s0_varimax"])
    a.uns["dae_s0_sparse"]["source_fingerprint"] = network_fingerprint(a.uns["dae_s0"])  # as written before
    DAE.load(d / "m0").annotate(a, key_added="dae_s0")
    assert "dae_s0_sparse" in a.uns
    DAE.load(d / "m1").annotate(a, key_added="dae_s0")  # another model: its read-outs go
    assert "dae_s0_sparse" not in a.uns
