"""Issue 14 (memory): preparing in chunks from disk gives what preparing in memory gives; embedding a prepared
file streams from file to file with the in-memory result; nothing densifies or copies a whole matrix."""

from __future__ import annotations

import logging

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import make_counts

import genodae
import genodae._values
from genodae.cli import main
from genodae.errors import UserError
from genodae.io import read_backed, read_sharing, write_h5ad


def _dense(M):
    return M.toarray() if sp.issparse(M) else np.asarray(M)


def _raw_file(tmp_path, n_cells=400, n_genes=300, **kw):
    a = make_counts(n_cells=n_cells, n_genes=n_genes, seed=3)
    X = a.X.tolil()
    X[5, :] = 0  # a cell without counts: dropped by both
    a.X = X.tocsr()
    a.obs["batch"] = np.where(np.arange(a.n_obs) % 3 == 0, "b1", "b2")
    a.layers["spliced"] = a.X.copy()
    a.obsm["X_other"] = np.arange(a.n_obs * 2, dtype=np.float32).reshape(-1, 2)
    path = tmp_path / "raw.h5ad"
    a.write_h5ad(path)
    return path


def _in_memory(path, out, **settings):
    a = genodae.read(path)
    genodae.pp.prepare(a, **settings)
    write_h5ad(a, out)
    return anndata.read_h5ad(out)


@pytest.mark.parametrize("settings", [
    {"n_top_genes": 100},  # seurat_v3 on counts
    {"n_top_genes": 100, "batch_key": "batch"},  # seurat_v3 within batches
    {"n_top_genes": 0, "scaling": "zscore"},  # every gene, z-scores
    {"hvg_flavor": "none", "scaling": "none", "min_cells": 30},
])
def test_chunked_prepare_equals_in_memory(tmp_path, settings):
    path = _raw_file(tmp_path)
    ref = _in_memory(path, tmp_path / "mem.h5ad", **settings)
    genodae.pp.prepare_h5ad(path, tmp_path / "chunked.h5ad", chunk_size=37, **settings)  # chunks cut batches
    got = anndata.read_h5ad(tmp_path / "chunked.h5ad")
    assert list(got.obs_names) == list(ref.obs_names) and got.n_obs == 399
    assert (got.var["highly_variable"] == ref.var["highly_variable"]).all()
    if settings.get("n_top_genes"):
        assert got.var["highly_variable"].sum() == 100
    np.testing.assert_array_equal(_dense(got.X), _dense(ref.X))
    np.testing.assert_array_equal(_dense(got.layers["counts"]), _dense(ref.layers["counts"]))
    np.testing.assert_array_equal(_dense(got.layers["spliced"]), _dense(ref.layers["spliced"]))
    np.testing.assert_array_equal(got.obsm["X_other"], ref.obsm["X_other"])
    for col in ("genodae_offset", "genodae_scale"):
        np.testing.assert_allclose(got.var[col], ref.var[col], rtol=1e-6, equal_nan=True)
    p_got, p_ref = got.uns["genodae_prepare"], ref.uns["genodae_prepare"]
    for k in ("input_kind", "value_kind", "transform", "source", "n_genes_used"):
        assert p_got[k] == p_ref[k]
    assert {k: float(v) for k, v in p_got["evidence"].items()} == pytest.approx(
        {k: float(v) for k, v in p_ref["evidence"].items()})
    assert sp.issparse(got.X) and got.X.dtype == np.float32


def test_chunked_prepare_chooses_the_in_memory_scaling_for_log_data(tmp_path):
    """scaling='auto' resolves alike in chunks: z-scores for log-scale input (min-max for counts: above)."""
    rng = np.random.default_rng(2)
    a = anndata.AnnData((rng.normal(8, 1.5, size=(1, 50)) + rng.normal(0, 0.7, size=(120, 50))).astype(np.float32))
    path = tmp_path / "log.h5ad"
    a.write_h5ad(path)
    ref = _in_memory(path, tmp_path / "mem.h5ad", hvg_flavor="none")
    genodae.pp.prepare_h5ad(path, tmp_path / "chunked.h5ad", chunk_size=37, hvg_flavor="none")
    got = anndata.read_h5ad(tmp_path / "chunked.h5ad")
    for p in (got, ref):
        assert p.uns["genodae_prepare"]["params"]["scaling"] == "zscore" and p.uns["genodae_prepare"]["scaling_auto"]
    for col in ("genodae_offset", "genodae_scale"):
        np.testing.assert_allclose(got.var[col], ref.var[col], rtol=1e-5)
    np.testing.assert_allclose(got.var["genodae_offset"], a.X.astype(np.float64).mean(0), rtol=1e-5)


def test_training_from_disk_says_why_a_0_1_model_cannot_rescale_auto_z_scores(tmp_path, capsys):
    """In memory a 0-1 model (adage) min-max scales data that scaling='auto' z-scored; from disk it cannot: the
    one-line error says why and what works instead, and leaves no model behind."""
    rng = np.random.default_rng(4)
    a = anndata.AnnData((rng.normal(8, 1.5, size=(1, 40)) + rng.normal(0, 0.7, size=(80, 40))).astype(np.float32))
    a.write_h5ad(tmp_path / "log.h5ad")
    assert main(["prepare", str(tmp_path / "log.h5ad"), "-o", str(tmp_path / "p.h5ad")]) == 0
    capsys.readouterr()
    assert main(["train", str(tmp_path / "p.h5ad"), "-o", str(tmp_path / "m"), "--backed", "--preset", "adage",
                 "--n-latent", "3", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "training from disk (--backed) cannot min-max scale the genes itself: train in memory (without " \
           "--backed), or prepare with scaling='minmax' (genodae prepare --scaling minmax)" in err
    assert "Traceback" not in err and not (tmp_path / "m").exists()
    assert main(["train", str(tmp_path / "p.h5ad"), "-o", str(tmp_path / "m"), "--preset", "adage",
                 "--n-latent", "3", "--epochs", "1"]) == 0


def test_chunked_prepare_samples_the_same_values_as_in_memory(tmp_path, monkeypatch):
    """Above the sample size (1M stored values; lowered here), the same values are sampled for the evidence."""
    monkeypatch.setattr(genodae._values, "_SAMPLE", 500)  # where value_evidence and the chunked evidence read it
    a = make_counts(n_cells=300, n_genes=100, seed=1)
    a.X = a.X.astype(np.float32) * 1.5  # non-integers: linear values, the sample decides
    path = tmp_path / "lin.h5ad"
    a.write_h5ad(path)
    ref = genodae.pp.value_evidence(a.X)
    from genodae._pp_chunked import evidence

    got, _ = evidence(read_backed(path).X, chunk=29)
    assert got == pytest.approx(ref)


def test_cli_prepare_backed_and_default_give_the_in_memory_file(tmp_path, caplog):
    path = _raw_file(tmp_path)
    ref = _in_memory(path, tmp_path / "mem.h5ad", n_top_genes=100)
    with caplog.at_level(logging.INFO, logger="genodae"):
        assert main(["prepare", str(path), "-o", str(tmp_path / "b.h5ad"), "--backed", "--n-top-genes", "100"]) == 0
    log = caplog.text
    assert f"wrote {tmp_path / 'b.h5ad'}" in log and ".tmp-" not in log  # the file the user asked for, no temp name
    assert main(["prepare", str(path), "-o", str(tmp_path / "d.h5ad"), "--n-top-genes", "100"]) == 0
    for name in ("b.h5ad", "d.h5ad"):
        got = anndata.read_h5ad(tmp_path / name)
        np.testing.assert_array_equal(_dense(got.X), _dense(ref.X))
        assert (got.var["highly_variable"] == ref.var["highly_variable"]).all()


def test_prepare_backed_refuses_what_it_cannot_do(tmp_path, capsys):
    path = _raw_file(tmp_path)
    assert main(["prepare", str(path), "-o", str(tmp_path / "x.h5ad"), "--backed", "--hvg-flavor", "seurat"]) == 2
    assert "--backed cannot use hvg_flavor='seurat'" in capsys.readouterr().err
    assert not (tmp_path / "x.h5ad").exists()
    sheet = tmp_path / "s.csv"
    sheet.write_text("sample,x\ncell0000,1\n")
    assert main(["prepare", str(path), "-o", str(tmp_path / "x.h5ad"), "--backed", "--obs", str(sheet)]) == 2


def test_log_data_falls_back_to_memory_by_default(tmp_path):
    a = make_counts(n_cells=200, n_genes=120, seed=2)
    sc_x = a.X.copy()
    sc_x.data = np.log1p(sc_x.data)
    a.X = sc_x
    path = tmp_path / "log.h5ad"
    a.write_h5ad(path)
    assert main(["prepare", str(path), "-o", str(tmp_path / "p.h5ad"), "--n-top-genes", "50"]) == 0  # seurat, in memory
    assert anndata.read_h5ad(tmp_path / "p.h5ad").var["highly_variable"].sum() == 50
    with pytest.raises(UserError, match="seurat"):
        genodae.pp.prepare_h5ad(path, tmp_path / "q.h5ad", n_top_genes=50)


@pytest.fixture
def prepared_and_model(tmp_path):
    path = _raw_file(tmp_path)
    genodae.pp.prepare_h5ad(path, tmp_path / "prep.h5ad", n_top_genes=100)
    a = anndata.read_h5ad(tmp_path / "prep.h5ad")
    model = genodae.DAE(epochs=2, n_latent=4, hidden=(16,), seed=0, device="cpu", num_threads=1).fit(a)
    return tmp_path / "prep.h5ad", model


@pytest.mark.parametrize("scale", ["auto", "counts", "log1p", "input"])
def test_annotate_h5ad_equals_annotate(tmp_path, prepared_and_model, scale):
    prep, model = prepared_and_model
    ref = anndata.read_h5ad(prep)
    model.annotate(ref, denoised=True, denoised_scale=scale)
    model.annotate_h5ad(prep, tmp_path / "e.h5ad", denoised=True, denoised_scale=scale)
    got = anndata.read_h5ad(tmp_path / "e.h5ad")
    np.testing.assert_array_equal(got.obsm["X_dae"], ref.obsm["X_dae"])
    np.testing.assert_array_equal(got.varm["dae_weights"], ref.varm["dae_weights"])
    np.testing.assert_array_equal(got.obs["dae_recon_error"], ref.obs["dae_recon_error"])
    np.testing.assert_array_equal(got.var["dae_recon_r2"], ref.var["dae_recon_r2"])
    np.testing.assert_array_equal(got.layers["dae_denoised"], ref.layers["dae_denoised"])
    np.testing.assert_array_equal(_dense(got.X), _dense(ref.X))
    assert got.uns["dae"]["denoised_scale"] == ref.uns["dae"]["denoised_scale"]


def test_dense_denoised_layer_is_refused_with_its_size(prepared_and_model, monkeypatch):
    prep, model = prepared_and_model
    import genodae.model as gm

    monkeypatch.setattr(gm, "_available_memory", lambda: 1000)
    a = anndata.read_h5ad(prep)
    with pytest.raises(UserError, match=r"dense denoised layer of 399 cells × 300 genes would take 0\.0 GiB"):
        model.annotate(a, denoised=True)
    model.annotate_h5ad(prep, prep.with_name("e.h5ad"), denoised=True)  # written in chunks: no such limit


def test_read_backed_leaves_layers_on_disk_and_read_sharing_shares_indices(prepared_and_model):
    prep, _ = prepared_and_model
    b = read_backed(prep)
    assert len(b.layers) == 0 and b.isbacked
    counts = genodae.io.backed_layer(b, "counts")
    assert counts.shape == (399, 300)
    b.file.close()
    s = read_sharing(prep)
    assert s.layers["counts"].indices is s.X.indices and s.layers["counts"].indptr is s.X.indptr
    ref = anndata.read_h5ad(prep)
    np.testing.assert_array_equal(s.layers["counts"].toarray(), ref.layers["counts"].toarray())


def test_scaling_and_gene_stats_never_copy_the_matrix(monkeypatch):
    """scipy's sparse min/max go through a CSC copy, X != 0 through a boolean matrix: the chunked statistics only
    convert a chunk of rows at a time, and give the same numbers."""
    from genodae._pp_chunked import gene_stats

    X = make_counts(n_cells=500, n_genes=50).X
    seen = []
    tocsc = sp.csr_matrix.tocsc
    monkeypatch.setattr(sp.csr_matrix, "tocsc", lambda self, copy=False: seen.append(self.shape[0]) or tocsc(self))
    det, lo, hi = gene_stats(X, chunk=64)
    monkeypatch.undo()
    assert seen and max(seen) <= 64
    np.testing.assert_array_equal(det, np.asarray((X != 0).sum(0)).ravel())
    np.testing.assert_array_equal(lo, X.toarray().min(0))
    np.testing.assert_array_equal(hi, X.toarray().max(0))
    off, sc = genodae.pp.scaling_params(X, "zscore")
    np.testing.assert_allclose(off, X.toarray().mean(0), rtol=1e-6)
    np.testing.assert_allclose(sc, np.where(X.toarray().std(0) > 0, X.toarray().std(0), 1), rtol=1e-5)


def test_run_leaves_no_temporary_files(tmp_path):
    path = _raw_file(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(path), "-o", str(out), "--epochs", "1", "--n-latent", "3", "--n-top-genes", "100",
                 "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    assert {"prepared.h5ad", "embedded.h5ad", "model", "embedding.tsv"} <= set(names)
    e = pd.read_csv(out / "embedding.tsv", sep="\t", index_col=0)
    assert e.shape == (399, 3)


def test_lognormalized_counts_rows_equal_log1p_of_scaled_counts():
    from genodae.train import LogNormalizedCounts

    C = make_counts(n_cells=50, n_genes=30, seed=1).X
    f = np.linspace(0.5, 2.0, 50)
    M = LogNormalizedCounts(C, f)
    rows = np.array([7, 3, 3, 49])
    np.testing.assert_allclose(M[rows].toarray(), np.log1p(C[rows].toarray() / f[rows, None]), rtol=1e-6)
    assert M.shape == C.shape
    with pytest.raises(ValueError, match="49 norm factors for 50 cells"):
        LogNormalizedCounts(C, f[:49])


@pytest.mark.parametrize("likelihood", ["nb", "normal"])
def test_training_reads_only_the_counts_and_learns_what_it_learns_from_x(tmp_path, likelihood):
    """``read_sharing(x_from_counts=True)`` (genodae train / run) leaves X on disk when it is the log1p-normalised
    counts, and the model computes it per minibatch: the same weights as training on X."""
    path = _raw_file(tmp_path)
    genodae.pp.prepare_h5ad(path, tmp_path / "p.h5ad", n_top_genes=100)
    lean = read_sharing(tmp_path / "p.h5ad", x_from_counts=True)
    assert lean.X is None and lean.layers["counts"].shape == (399, 300)
    full = read_sharing(tmp_path / "p.h5ad")
    settings = dict(n_latent=4, epochs=3, seed=0, gene_likelihood=likelihood)
    a = genodae.DAE(**settings).fit(full)
    b = genodae.DAE(**settings).fit(lean)
    np.testing.assert_array_equal(b.weights, a.weights)  # the input is the prepared X to the bit
    assert b.history.val_loss == a.history.val_loss


def test_training_reads_x_when_it_is_not_the_normalised_counts(tmp_path):
    path = _raw_file(tmp_path)
    genodae.pp.prepare_h5ad(path, tmp_path / "p.h5ad", n_top_genes=100)
    a = anndata.read_h5ad(tmp_path / "p.h5ad")
    a.X = a.X * 1.01  # changed after prepare: X is what the user means
    a.write_h5ad(tmp_path / "changed.h5ad")
    assert read_sharing(tmp_path / "changed.h5ad", x_from_counts=True).X is not None
    logs = make_counts(n_cells=100, n_genes=40, seed=2)
    logs.X = np.log1p(logs.X.toarray())
    genodae.pp.prepare(logs)  # log-scale input: no counts to compute X from
    write_h5ad(logs, tmp_path / "log.h5ad")
    assert read_sharing(tmp_path / "log.h5ad", x_from_counts=True).X is not None


def test_fit_without_x_needs_counts_to_compute_it(tmp_path):
    path = _raw_file(tmp_path)
    genodae.pp.prepare_h5ad(path, tmp_path / "p.h5ad", n_top_genes=100)
    a = read_sharing(tmp_path / "p.h5ad", x_from_counts=True)
    del a.layers["counts"]
    with pytest.raises(UserError, match=r"adata.X is empty \(None\)"):
        genodae.DAE(n_latent=4, epochs=1, gene_likelihood="normal").fit(a)


def test_the_counts_only_reader_needs_x_to_the_bit(tmp_path):
    """X edited by as little as 5e-6 is what the user means: read it."""
    path = _raw_file(tmp_path)
    genodae.pp.prepare_h5ad(path, tmp_path / "p.h5ad", n_top_genes=100)
    a = anndata.read_h5ad(tmp_path / "p.h5ad")
    a.X.data[0] += 5e-6
    a.write_h5ad(tmp_path / "edited.h5ad")
    assert read_sharing(tmp_path / "edited.h5ad", x_from_counts=True).X is not None


def test_a_cell_without_counts_trains_as_from_x(tmp_path):
    """A prepared file edited to hold a cell with no counts trains the same way from X and from the counts."""
    path = _raw_file(tmp_path)
    genodae.pp.prepare_h5ad(path, tmp_path / "p.h5ad", n_top_genes=100)
    a = anndata.read_h5ad(tmp_path / "p.h5ad")
    for M in (a.X, a.layers["counts"]):
        M.data[M.indptr[7] : M.indptr[8]] = 0
        M.eliminate_zeros()
    a.write_h5ad(tmp_path / "zero.h5ad")
    lean = read_sharing(tmp_path / "zero.h5ad", x_from_counts=True)
    assert lean.X is None
    settings = dict(n_latent=4, epochs=2, seed=0, gene_likelihood="normal")
    np.testing.assert_array_equal(genodae.DAE(**settings).fit(lean).weights,
                                  genodae.DAE(**settings).fit(read_sharing(tmp_path / "zero.h5ad")).weights)


def test_chunked_prepare_keeps_an_obsm_table_as_the_in_memory_prepare_does(tmp_path):
    a = anndata.read_h5ad(_raw_file(tmp_path))
    a.obsm["meta"] = pd.DataFrame({"plate": [f"p{i % 4}" for i in range(a.n_obs)], "well": np.arange(a.n_obs)},
                                  index=a.obs_names)
    path = tmp_path / "with_table.h5ad"
    a.write_h5ad(path)
    assert main(["prepare", str(path), "-o", str(tmp_path / "b.h5ad"), "--backed", "--n-top-genes", "100"]) == 0
    ref = _in_memory(path, tmp_path / "mem.h5ad", n_top_genes=100)
    got = anndata.read_h5ad(tmp_path / "b.h5ad")
    assert isinstance(got.obsm["meta"], pd.DataFrame)  # the cell without counts dropped, the table kept
    pd.testing.assert_frame_equal(got.obsm["meta"], ref.obsm["meta"])


def test_chunked_prepare_on_a_full_disk_is_one_line_naming_the_output(tmp_path, monkeypatch, capsys):
    import os
    import sys

    import genodae._pp_chunked as chunked
    from genodae import cli

    def full(*args, **kwargs):  # what h5py raises when the disk fills mid-write (not an OSError)
        raise RuntimeError("Can't close file (file write failed: time = Fri Dec  4, filename = "
                           f"'{tmp_path}/.b.tmp-0123456789.h5ad', errno = 28, error message = 'No space left on device')")

    def exit_now(code):  # the command ends the process at once after a full disk (h5py may crash at exit otherwise)
        raise SystemExit(f"os._exit({code})")

    monkeypatch.setattr(chunked, "_write_rows", full)
    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setattr(sys, "argv", ["genodae", "prepare", str(_raw_file(tmp_path)), "-o", str(tmp_path / "b.h5ad"),
                                      "--backed", "--n-top-genes", "100"])
    with pytest.raises(SystemExit) as ended:
        cli.run()  # what the console script calls
    err = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == "os._exit(2)" and not (tmp_path / "b.h5ad").exists()
    assert not list(tmp_path.glob(".b.tmp-*"))  # nothing half-written left
    assert f"Cannot write {tmp_path / 'b.h5ad'}: the disk refused the write" in err[-1] and ".tmp-" not in err[-1]


def test_sigterm_while_writing_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    import os
    import signal
    import sys

    import genodae._pp_chunked as chunked

    write_rows = chunked._write_rows

    def killed(*args, **kwargs):  # a scheduler's time limit arrives in the middle of the write
        write_rows(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(chunked, "_write_rows", killed)
    before, before_hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    path = _raw_file(tmp_path)
    rc = main(["prepare", str(path), "-o", str(tmp_path / "b.h5ad"), "--backed", "--n-top-genes", "100"])
    assert rc == 143 and "terminated (SIGTERM" in capsys.readouterr().err
    assert not (tmp_path / "b.h5ad").exists() and not list(tmp_path.glob(".b.tmp-*"))
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is main()'s own, restored afterwards
    assert sys.unraisablehook is before_hook  # so is the hook that quiets h5py's reports after a failed write


def test_prepare_refuses_before_writing_when_the_disk_cannot_hold_the_output(tmp_path, monkeypatch):
    import shutil

    path = _raw_file(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError, match=r"Cannot write .*b\.h5ad: it needs about .* MB free; free space or write it"):
        genodae.pp.prepare_h5ad(path, tmp_path / "b.h5ad", n_top_genes=100)
    assert not (tmp_path / "b.h5ad").exists() and not list(tmp_path.glob(".b.tmp-*"))
