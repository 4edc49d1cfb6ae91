"""genodae._keys: the one place every AnnData key name and node label is built; key reads, key_added writes."""

from __future__ import annotations

import ast
import inspect
import warnings
from pathlib import Path

import anndata
import numpy as np
import pytest

import genodae
from genodae import DAE, _keys, get, pp
from genodae.config import ROTATIONS, DAEConfig
from genodae.errors import UserError

PKG = Path(genodae.__file__).parent
FAST = dict(n_latent=4, hidden=(16,), epochs=3, batch_size=32, num_threads=1, seed=0)


@pytest.fixture(scope="module")
def model_and_data(_counts_adata_session):
    adata = _counts_adata_session.copy()
    pp.prepare(adata, n_top_genes=80)
    return DAE(**FAST).fit(adata), adata


# --- names ------------------------------------------------------------------------------------------------


def test_names_of_a_model_prefix():
    assert _keys.embedding_key("foo") == "X_foo"
    assert _keys.weights_key("foo") == "foo_weights"
    assert _keys.decoder_weights_key("foo") == "foo_decoder_weights"
    assert _keys.recon_error_key("foo") == "foo_recon_error"
    assert _keys.recon_r2_key("foo") == "foo_recon_r2"
    assert _keys.denoised_key("foo") == "foo_denoised"
    assert _keys.params_key("foo") == "foo"
    assert _keys.signatures_key("foo") == "foo_signatures"
    assert _keys.enrichment_key("foo") == "foo_enrichment"
    assert _keys.rotated_key("foo") == "foo_sparse" and _keys.rotated_key("foo", "varimax") == "foo_varimax"
    assert _keys.DEFAULT_ROTATED == _keys.rotated_key(_keys.DEFAULT) == "dae_sparse"
    assert set(_keys.ROTATION_METHODS) == set(ROTATIONS) - {"none"}
    # the signatures' read-out (sparse nodes) is not the basis a model reports (distance-keeping varimax nodes)
    from genodae import signatures as S
    for fn in (S.signatures, S.ensemble, S.rotate):
        default = inspect.signature(fn).parameters["rotation" if fn is not S.rotate else "method"].default
        assert default == _keys.DEFAULT_ROTATION == "sparse", fn
    assert DAEConfig().rotation == "varimax"
    assert (_keys.PREP, _keys.COUNTS_LAYER, _keys.HIGHLY_VARIABLE) == ("genodae_prepare", "counts", "highly_variable")
    assert pp.PREP_KEY == _keys.PREP


def test_suffixes_are_parsed_not_sliced():
    assert _keys.rotated_source("dae_varimax") == ("dae", "varimax")
    assert _keys.rotated_source("dae_sparse") == ("dae", "sparse")
    assert _keys.rotated_source("my_model_varimax") == ("my_model", "varimax")
    assert _keys.rotated_source("dae") is None and _keys.rotated_source("_varimax") is None
    assert _keys.rotated_source("_sparse") is None and _keys.rotated_source("dae_sparse_x") is None
    varm = ["dae_weights", "dae_decoder_weights", "dae_varimax_weights", "weights", "_weights", "other"]
    assert _keys.weights_keys(varm) == ["dae", "dae_varimax"]  # a model's decoder weights are no model of their own
    assert _keys.weights_keys(["foo_decoder_weights"]) == ["foo_decoder"]  # unless there is no model "foo"
    assert _keys.embedding_keys(["X_dae", "X_umap", "X_", "dae", "PCs"]) == ["dae", "umap"]


def test_node_labels_and_their_override():
    assert _keys.node_names(3) == ["node0", "node1", "node2"]
    assert _keys.node_names(2, _keys.ROTATED_NODE) == ["vnode0", "vnode1"]
    assert _keys.node_names(1, _keys.CONSENSUS_NODE) == ["cnode0"]
    a = anndata.AnnData(np.zeros((2, 3), dtype=np.float32))
    assert _keys.node_labels(a, "dae", 2) == ["node0", "node1"]
    a.uns["dae"] = {"node_names": np.array(["a", "b"])}
    assert _keys.node_labels(a, "dae", 2) == ["a", "b"] == _keys.node_labels(a.uns, "dae", 2)
    assert _keys.node_labels(a, "dae", 3) == ["node0", "node1", "node2"]  # stored names of another size: ignored
    assert _keys.node_labels(None, "dae", 1) == ["node0"]


def test_keys_added_for_the_log():
    assert _keys.model_keys_added("m") == ["obsm['X_m']", "varm['m_weights']", "varm['m_decoder_weights']",
                                           "var['m_recon_r2']", "obs['m_recon_error']", "uns['m']"]
    assert _keys.model_keys_added("m", denoised=True)[-1] == "layers['m_denoised']"
    assert _keys.keys_added("r", "varm", "obsm", "uns") == ["varm['r_weights']", "obsm['X_r']", "uns['r']"]


def test_resolve_key_added():
    assert _keys.resolve_key_added(None, None) == "dae"
    assert _keys.resolve_key_added("foo", None) == "foo"
    with pytest.warns(FutureWarning, match="key_added"):
        assert _keys.resolve_key_added(None, "old", where="f") == "old"
    with pytest.warns(FutureWarning):
        assert _keys.resolve_key_added("same", "same") == "same"
    with pytest.raises(UserError, match="key_added"):
        _keys.resolve_key_added("a", "b", where="f")


# --- writers take key_added, readers key --------------------------------------------------------------------


def test_annotate_writes_every_name_of_the_contract(model_and_data):
    model, adata = model_and_data
    a = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model.annotate(a, key_added="foo", denoised=True)
    assert _keys.embedding_key("foo") in a.obsm
    assert {_keys.weights_key("foo"), _keys.decoder_weights_key("foo")} <= set(a.varm)
    assert _keys.recon_error_key("foo") in a.obs and _keys.recon_r2_key("foo") in a.var
    assert _keys.denoised_key("foo") in a.layers and _keys.params_key("foo") in a.uns
    assert not any(k.startswith("dae") for k in [*a.obsm, *a.varm, *a.uns, *a.layers])
    W = get.gene_weights(a, "foo")
    assert list(W.columns) == _keys.node_names(FAST["n_latent"])
    assert get.activities(a, "foo").shape == (a.n_obs, FAST["n_latent"])
    assert get.params(a, "foo")["n_latent"] == FAST["n_latent"]
    with pytest.raises(UserError, match=r"'fooo' is not a genodae model .*pass one of its models: foo$"):
        get.params(a, "fooo")  # a misspelt key is named, not answered with empty settings
    a.uns["pca"] = {"params": {"zero_center": True}}  # another tool's record is not a model's settings
    for other in ("pca", "foo_decoder"):
        with pytest.raises(UserError, match="is not a genodae model"):
            get.params(a, other)
    a.varm["bare_weights"] = a.varm[_keys.weights_key("foo")]
    assert get.params(a, "bare") == {}  # weights without recorded settings (e.g. written by hand)
    rebuilt = genodae.DAEConfig(**get.params(a, "foo"))  # plain values: the settings rebuild the config
    assert rebuilt.n_latent == FAST["n_latent"] and isinstance(rebuilt.hidden, (list, tuple))


def test_annotate_key_is_the_deprecated_name_of_key_added(model_and_data):
    model, adata = model_and_data
    a, b = adata.copy(), adata.copy()
    model.annotate(a, key_added="foo")
    with pytest.warns(FutureWarning, match="key_added"):
        model.annotate(b, key="foo")
    np.testing.assert_array_equal(a.obsm["X_foo"], b.obsm["X_foo"])
    assert set(a.varm) == set(b.varm) and set(a.obs) == set(b.obs)
    with pytest.raises(UserError):
        model.annotate(adata.copy(), key="foo", key_added="bar")


def test_annotate_h5ad_takes_key_added_too(model_and_data, tmp_path):
    model, adata = model_and_data
    adata.write_h5ad(tmp_path / "p.h5ad")
    model.annotate_h5ad(tmp_path / "p.h5ad", tmp_path / "a.h5ad", key_added="foo")
    with pytest.warns(FutureWarning):
        model.annotate_h5ad(tmp_path / "p.h5ad", tmp_path / "b.h5ad", key="foo")
    a, b = anndata.read_h5ad(tmp_path / "a.h5ad"), anndata.read_h5ad(tmp_path / "b.h5ad")
    assert "X_foo" in a.obsm and "foo_weights" in a.varm and "foo_recon_error" in a.obs
    np.testing.assert_array_equal(a.obsm["X_foo"], b.obsm["X_foo"])


def test_score_writes_under_key_added(model_and_data, tmp_path):
    model, adata = model_and_data
    act = genodae.tl.score(adata.copy(), model=model, key_added="new", rotation="none")
    a = adata.copy()
    act_r = genodae.tl.score(a, model=model, key_added="new")
    assert list(act.columns) == _keys.node_names(FAST["n_latent"])
    assert list(act_r.columns) == _keys.node_names(FAST["n_latent"], _keys.ROTATED_NODE)
    assert {"X_new", "X_new_sparse"} <= set(a.obsm)
    with pytest.warns(FutureWarning):
        old = genodae.tl.score(adata.copy(), model=model, key="new", rotation="none")
    np.testing.assert_array_equal(old.to_numpy(), act.to_numpy())


def test_readers_name_what_is_there(model_and_data):
    model, adata = model_and_data
    a = adata.copy()
    model.annotate(a, key_added="m1")
    with pytest.raises(UserError, match=r"available: m1\b"):
        get.gene_weights(a, "dae")
    with pytest.raises(UserError, match=r"obsm\['X_dae'\].*available: m1"):
        get.activities(a, "dae")


# --- nothing else builds them --------------------------------------------------------------------------------

_SUFFIXES = ("_weights", "_decoder_weights", "_recon_error", "_recon_r2", "_denoised", "_signatures", "_enrichment")


def _key_building(path: Path) -> list[str]:
    """f-strings that build a key name (``f"X_{key}"``, ``f"{key}_weights"`` …), and bare suffix constants
    (``"_weights"``, used to slice or test names): docstrings and messages are other constants, not these."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            first = node.values[0] if node.values else None
            starts_x = isinstance(first, ast.Constant) and str(first.value).endswith("X_")
            if starts_x or any(p.startswith(_SUFFIXES) and p.split("'")[0].split('"')[0] in _SUFFIXES
                               for p in parts):
                found.add(node.lineno)
        elif isinstance(node, ast.Constant) and node.value in (*_SUFFIXES, "X_", "vnode", "cnode"):
            found.add(node.lineno)
    return [f"{path.name}:{n}" for n in sorted(found)]


def test_key_names_are_built_only_in_the_keys_module():
    # The flat CLI modules are another part of issue 15 (moving into a package); checked once they are gone.
    skip = {"_keys.py"} | ({"cli.py", "cli_signatures.py"} if (PKG / "cli_signatures.py").exists() else set())
    found = [f for p in sorted(PKG.rglob("*.py")) if p.name not in skip for f in _key_building(p)]
    assert found == []


def test_the_key_building_check_finds_what_it_looks_for(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('k = "dae"\na = f"X_{k}"\nb = f"{k}_weights"\nc = [n[:-8] for n in x if n.endswith("_weights")]\n'
                 'd = f"obsm[\'X_{k}\'] not found"\ne = f"{k}: loss"\n')
    assert _key_building(p) == ["m.py:2", "m.py:3", "m.py:4", "m.py:5"]
