"""The ``genodae`` command line: help and defaults, the step chain, ``run``, settings files, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

import genodae
from genodae import DAE, pp
from genodae.cli import main
from genodae.config import DAEConfig
from genodae.errors import UserError
from genodae.io import write_h5ad

FAST = ["--n-latent", "4", "--hidden", "16", "--epochs", "3", "--batch-size", "32", "--num-threads", "1"]
SUBCOMMANDS = ["example", "prepare", "train", "embed", "export", "plot", "run"]


def cli(*args) -> int:
    """Run the CLI in-process; argparse's own exits (help, version, bad flags) count as return codes."""
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


@pytest.fixture(scope="module")
def files(_counts_adata_session, tmp_path_factory) -> dict[str, Path]:
    """Raw counts, prepared data and a trained model on disk (made with the library: fast)."""
    d = tmp_path_factory.mktemp("cli")
    raw = _counts_adata_session.copy()
    write_h5ad(raw, d / "counts.h5ad")
    prepared = raw.copy()
    pp.prepare(prepared, n_top_genes=150)
    write_h5ad(prepared, d / "prepared.h5ad")
    DAE(n_latent=4, hidden=(16,), epochs=2, num_threads=1).fit(prepared).save(d / "model")
    used = set(prepared.var_names[prepared.var["highly_variable"]])
    partial = raw[:, [g for g in raw.var_names if g not in list(used)[:5]]].copy()
    write_h5ad(partial, d / "partial_counts.h5ad")
    return {"dir": d, "counts": d / "counts.h5ad", "prepared": d / "prepared.h5ad", "model": d / "model",
            "partial": d / "partial_counts.h5ad"}


# --- version and help -------------------------------------------------------------------------------------


def test_version(capsys):
    assert cli("--version") == 0
    assert capsys.readouterr().out.strip() == f"genodae {genodae.__version__}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand_shows_defaults(command, capsys):
    assert cli(command, "--help") == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert text.startswith(f"usage: genodae {command}")
    if command != "example":
        assert "(default: " in text
    if command in ("train", "run"):
        assert "--n-latent N_LATENT" in text and "(default: 32)" in text
        assert "--corruption CORRUPTION" in text and "(default: 0.2)" in text
        assert "(default: 256)" in text  # hidden
    if command in ("prepare", "run"):
        assert "(default: 2000)" in text and "(default: auto)" in text


def test_no_subcommand_is_a_usage_error(capsys):
    assert cli() == 2
    assert "error" in capsys.readouterr().err


# --- the steps, chained -----------------------------------------------------------------------------------


def test_prepare_train_embed_export_chain(files, tmp_path, capsys):
    counts, d = files["counts"], tmp_path
    assert cli("prepare", counts, "-o", d / "p.h5ad", "--n-top-genes", "150") == 0
    p = anndata.read_h5ad(d / "p.h5ad")
    assert p.var["highly_variable"].sum() == 150 and "counts" in p.layers

    assert cli("train", d / "p.h5ad", "-o", d / "model", *FAST, "--seed", "3") == 0
    assert sorted(x.name for x in (d / "model").iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((d / "model" / "model.json").read_text())
    assert meta["config"]["n_latent"] == 4 and meta["config"]["seed"] == 3 and meta["config"]["hidden"] == [16]
    assert not (d / "model.ckpt").exists()

    assert cli("embed", counts, d / "model", "-o", d / "e.h5ad", "--denoised") == 0  # raw counts in
    e = anndata.read_h5ad(d / "e.h5ad")
    assert e.obsm["X_dae"].shape == (300, 4) and "dae_denoised" in e.layers
    np.testing.assert_allclose(e.obsm["X_dae"], DAE.load(d / "model").embed(p), rtol=1e-4, atol=1e-5)

    assert cli("export", d / "e.h5ad", "--embedding", d / "emb.tsv", "--weights", d / "w.tsv",
               "--genes", d / "genes.tsv") == 0
    emb = pd.read_csv(d / "emb.tsv", sep="\t", index_col=0)
    assert emb.shape == (300, 4) and list(emb.index) == list(e.obs_names)
    assert list(emb.columns) == ["node0", "node1", "node2", "node3"] and emb.index.name == "cell"
    np.testing.assert_allclose(emb.to_numpy(), e.obsm["X_dae"], rtol=1e-6)
    w = pd.read_csv(d / "w.tsv", sep="\t", index_col=0)
    used = p.var_names[p.var["highly_variable"]]
    assert w.shape == (150, 4) and list(w.index) == list(used) and w.index.name == "gene"
    np.testing.assert_allclose(w.to_numpy(), DAE.load(d / "model").gene_weights().to_numpy(), rtol=1e-6)
    genes = pd.read_csv(d / "genes.tsv", sep="\t", index_col=0)
    assert len(genes) == 200 and genes["used"].sum() == 150
    assert not [x for x in d.iterdir() if x.name.startswith(".")]  # no temporaries left


def test_run_produces_every_output(files, tmp_path):
    out = tmp_path / "out"
    assert cli("run", files["counts"], "-o", out, *FAST, "--n-top-genes", "150") == 0
    names = {x.name for x in out.iterdir()}
    assert {"prepared.h5ad", "model", "embedded.h5ad", "embedding.tsv", "gene_weights.tsv", "genes.tsv",
            "loss.png"} <= names
    assert not [n for n in names if n.startswith(".") or n.endswith(".ckpt")]
    e = anndata.read_h5ad(out / "embedded.h5ad")
    assert e.obsm["X_dae"].shape == (300, 4) and e.varm["dae_weights"].shape == (200, 4)
    assert np.array_equal(e.X.toarray(), anndata.read_h5ad(out / "prepared.h5ad").X.toarray())
    assert pd.read_csv(out / "gene_weights.tsv", sep="\t", index_col=0).shape == (150, 4)
    np.testing.assert_allclose(DAE.load(out / "model").embed(e), e.obsm["X_dae"], rtol=1e-6)


# --- settings files ---------------------------------------------------------------------------------------


def test_settings_yaml_is_applied_and_explicit_flags_win(files, tmp_path):
    s = tmp_path / "settings.yaml"
    s.write_text("# model settings\nn_latent: 3\nepochs: 2\nhidden: [8]\nseed: 5\nnum-threads: 1\n")
    assert cli("train", files["prepared"], "-o", tmp_path / "m", "--settings", s, "--n-latent", "2") == 0
    cfg = json.loads((tmp_path / "m" / "model.json").read_text())["config"]
    assert cfg["n_latent"] == 2  # the flag
    assert (cfg["epochs"], cfg["hidden"], cfg["seed"]) == (2, [8], 5)  # the file
    assert cfg["corruption"] == DAEConfig().corruption  # neither: the default


def test_settings_json_with_a_preset(files, tmp_path):
    s = tmp_path / "settings.json"
    s.write_text(json.dumps({"preset": "adage", "epochs": 1, "n_latent": 3, "num_threads": 1}))
    assert cli("train", files["prepared"], "-o", tmp_path / "m", "--settings", s) == 0
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    cfg = meta["config"]
    assert meta["preset"] == "adage"
    assert cfg["tied"] is True and cfg["epochs"] == 1 and cfg["n_latent"] == 3 and cfg["gene_likelihood"] == "bernoulli"


def test_preparation_settings_in_a_file_and_flags(files, tmp_path):
    s = tmp_path / "settings.yaml"
    s.write_text("n_top_genes: 40\nscaling: zscore\n")
    assert cli("prepare", files["counts"], "-o", tmp_path / "a.h5ad", "--settings", s) == 0
    a = anndata.read_h5ad(tmp_path / "a.h5ad")
    assert a.var["highly_variable"].sum() == 40 and a.uns["genodae_prepare"]["params"]["scaling"] == "zscore"
    assert cli("prepare", files["counts"], "-o", tmp_path / "b.h5ad", "--settings", s, "--n-top-genes", "30") == 0
    assert anndata.read_h5ad(tmp_path / "b.h5ad").var["highly_variable"].sum() == 30


# --- user errors: one line, exit code 2, no traceback, no output -----------------------------------------

ERRORS = {
    "missing input": (["prepare", "{dir}/nope.h5ad", "-o", "{out}.h5ad"], "not found"),
    "bad corruption": (["train", "{prepared}", "-o", "{out}", "--corruption", "1.5"], "corruption"),
    "n_latent > genes": (["train", "{prepared}", "-o", "{out}", "--n-latent", "500"], "n_latent"),
    "unknown preset": (["train", "{prepared}", "-o", "{out}", "--preset", "foo"], "invalid choice"),
    "non-numeric flag": (["train", "{prepared}", "-o", "{out}", "--batch-size", "ten"], "invalid int"),
    "non-numeric epochs": (["train", "{prepared}", "-o", "{out}", "--epochs", "ten"], "whole number or auto"),
    "bad device": (["train", "{prepared}", "-o", "{out}", "--device", "tpu"], "device"),
    "layer not found": (["train", "{prepared}", "-o", "{out}", "--layer", "nope"], "layer"),
    "train on non-h5ad": (["train", "{dir}/x.csv", "-o", "{out}"], ".h5ad"),
    "settings file missing": (["train", "{prepared}", "-o", "{out}", "--settings", "{dir}/nope.yaml"],
                              "settings file"),
    "bad scaling": (["prepare", "{counts}", "-o", "{out}.h5ad", "--scaling", "rank"], "scaling"),
    "model missing": (["embed", "{counts}", "{dir}/nomodel", "-o", "{out}.h5ad"], "not a folder"),
    "genes absent from the model": (["embed", "{partial}", "{model}", "-o", "{out}.h5ad"], "5 of the model"),
    "export nothing": (["export", "{prepared}"], "nothing to export"),
    "export not embedded": (["export", "{prepared}", "--embedding", "{out}.tsv"], "obsm"),
    "run n_latent > genes": (["run", "{counts}", "-o", "{out}", "--n-latent", "500", "--n-top-genes", "100"],
                             "n_latent"),
    "run output named .h5ad": (["run", "{counts}", "-o", "{out}.h5ad", *FAST],
                               "ends in .h5ad, but genodae run writes a folder of results"),
    "run --transform-batch without --denoised": (["run", "{counts}", "-o", "{out}", "--transform-batch", "g1"],
                                                 "changes only the denoised layer; add --denoised"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_exit_2_with_one_line_and_no_output(case, files, tmp_path, capsys):
    template, expected = ERRORS[case]
    subs = {k: str(v) for k, v in files.items()} | {"out": str(tmp_path / "out")}
    args = [a.format(**subs) for a in template]
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = _one_line(err)
    assert line.startswith("genodae") and "error" in line and expected in line, line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")], "an output was written"


def test_run_output_named_h5ad_suggests_a_folder_name(files, tmp_path, capsys):
    assert cli("run", files["counts"], "-o", tmp_path / "run4.h5ad", *FAST) == 2
    assert _one_line(capsys.readouterr().err).endswith(f"give a folder name, e.g. {tmp_path / 'run4'}")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["prepared.h5ad", "embedded.h5ad"])
def test_run_refuses_an_input_it_would_rewrite(files, tmp_path, capsys, monkeypatch, name):
    """genodae run out/prepared.h5ad -o out would replace its own input with its output: refused before any work."""
    out = tmp_path / "out"
    out.mkdir()
    given = out / name
    given.write_bytes(Path(files["prepared"]).read_bytes())
    before = given.read_bytes()
    monkeypatch.setattr(DAE, "fit", lambda *a, **k: pytest.fail("trained although the input is an output"))
    assert cli("run", given, "-o", out, *FAST, "-q") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"input {given} is {name} of the output folder {out}, which genodae run rewrites" in line, line
    assert given.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [name]


@pytest.mark.parametrize(("extra", "expected"), [
    ((), "--transform-batch g1 needs a model trained with a batch column: add --batch-key COLUMN"),
    (("--batch-key", "group", "--transform-batch", "g9"), "--transform-batch g9 is not a batch of 'group'; its "
     "batches: g0, g1, g2"),
])
def test_run_checks_transform_batch_before_training(files, tmp_path, capsys, monkeypatch, extra, expected):
    """--transform-batch that cannot apply is refused before preparing and training, not after."""
    monkeypatch.setattr(DAE, "fit", lambda *a, **k: pytest.fail("trained before --transform-batch was checked"))
    args = ("--transform-batch", "g1") if not extra else extra
    rc = cli("run", files["counts"], "-o", tmp_path / "out", *FAST, "--denoised", *args, "-q")
    assert rc == 2
    line = _one_line(capsys.readouterr().err)
    assert expected in line, line
    assert not (tmp_path / "out").exists()


def test_unknown_setting_in_a_settings_file_is_a_user_error(files, tmp_path, capsys):
    s = tmp_path / "s.yaml"
    s.write_text("n_latnet: 3\n")
    assert cli("train", files["prepared"], "-o", tmp_path / "m", "--settings", s) == 2
    assert "n_latnet" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


def test_checkpoint_dir_given_by_the_user_keeps_its_other_files(files, tmp_path):
    keep = tmp_path / "scratch"
    keep.mkdir()
    (keep / "precious.txt").write_text("do not delete")
    args = ["train", files["prepared"], "-o", tmp_path / "m", *FAST, "--epochs", "2"]
    assert cli(*args, "--checkpoint-dir", keep, "--checkpoint-every", "1") == 0
    assert (keep / "precious.txt").exists()


def test_checkpoint_every_then_resume(files, tmp_path):
    """The CLI path of checkpointing: a resumed run with more epochs equals one uninterrupted run."""
    from safetensors.torch import load_file

    base = ["train", files["prepared"], *FAST[:-4], "--batch-size", "32", "--num-threads", "1"]
    assert cli(*base, "-o", tmp_path / "full", "--epochs", "4") == 0
    ck = tmp_path / "ck"
    assert cli(*base, "-o", tmp_path / "half", "--epochs", "2", "--checkpoint-every", "1",
               "--checkpoint-dir", ck) == 0
    # the finished run removed its checkpoint: write one again, as a killed job would have left it
    from genodae.train import CHECKPOINT_FILE

    assert not (ck / CHECKPOINT_FILE).exists()
    prepared = anndata.read_h5ad(files["prepared"])
    DAE(n_latent=4, hidden=(16,), epochs=2, batch_size=32, num_threads=1).fit(
        prepared, checkpoint_dir=ck, checkpoint_every=1)
    assert cli(*base, "-o", tmp_path / "resumed", "--epochs", "4", "--resume", "--checkpoint-dir", ck) == 0
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.parametrize("other", ["renamed genes", "fewer genes"])
def test_resume_refuses_a_checkpoint_made_on_other_data(files, tmp_path, capsys, other):
    """--resume with a checkpoint of other data (as when a killed job's output folder is reused for another
    file): one line naming the checkpoint and the fix, no model written, the checkpoint kept; not a silent resume
    (other genes, same count) nor torch's size-mismatch traceback (another gene count)."""
    from genodae.train import CHECKPOINT_FILE

    prepared = anndata.read_h5ad(files["prepared"])
    ck = tmp_path / "m.ckpt"
    DAE(n_latent=4, hidden=(16,), epochs=2, batch_size=32, num_threads=1).fit(
        prepared, checkpoint_dir=ck, checkpoint_every=1)  # as a killed `genodae train A -o m` leaves it
    if other == "renamed genes":
        prepared.var_names = [f"other_{g}" for g in prepared.var_names]
        expected = "(genes differ)"
    else:
        hv = prepared.var_names[prepared.var["highly_variable"]]
        prepared = prepared[:, ~prepared.var_names.isin(hv[:10])].copy()
        expected = f"({len(hv)} genes in the checkpoint, {len(hv) - 10} now)"
    write_h5ad(prepared, tmp_path / "b.h5ad")
    capsys.readouterr()
    rc = cli("train", tmp_path / "b.h5ad", "-o", tmp_path / "m", *FAST, "--resume", "-q")
    line = _one_line(capsys.readouterr().err)
    assert rc == 2
    assert f"checkpoint {ck / CHECKPOINT_FILE} was made on other data {expected}: delete" in line
    assert line.endswith("or train without --resume (resume=False in Python)")
    assert not (tmp_path / "m").exists() and (ck / CHECKPOINT_FILE).is_file()


def test_resume_refuses_data_prepared_with_other_settings_the_scaling_does_not_show(files, tmp_path, capsys):
    """With scaling='none' another target_sum leaves genes, cells and (absent) scaling alike: the checkpoint's record
    of the preparation tells them apart."""
    from genodae.train import CHECKPOINT_FILE

    raw = anndata.read_h5ad(files["counts"])
    a, b = raw.copy(), raw.copy()
    pp.prepare(a, n_top_genes=150, scaling="none")
    pp.prepare(b, n_top_genes=150, scaling="none", target_sum=100)
    ck = tmp_path / "m.ckpt"
    DAE(n_latent=4, hidden=(16,), epochs=2, batch_size=32, num_threads=1).fit(a, checkpoint_dir=ck, checkpoint_every=1)
    write_h5ad(b, tmp_path / "b.h5ad")
    capsys.readouterr()
    assert cli("train", tmp_path / "b.h5ad", "-o", tmp_path / "m", *FAST, "--resume", "-q") == 2
    line = _one_line(capsys.readouterr().err)
    assert ("was made on other data (prepared otherwise (target_sum 10000.0 in the checkpoint, 100 now)): delete"
            in line), line
    assert not (tmp_path / "m").exists() and (ck / CHECKPOINT_FILE).is_file()


def test_resume_refuses_cells_whose_batch_labels_changed_with_the_same_levels(files, tmp_path, capsys):
    """The record holds each cell's batch value, not only the levels: relabelled cells (the same batches, shuffled)
    are other training data; the same labels resume."""
    from genodae.train import CHECKPOINT_FILE

    prepared = anndata.read_h5ad(files["prepared"])
    ck = tmp_path / "m.ckpt"
    settings = dict(n_latent=4, hidden=(16,), batch_size=32, num_threads=1, batch_key="group")
    DAE(epochs=2, **settings).fit(prepared, checkpoint_dir=ck, checkpoint_every=1)
    resumed = DAE(epochs=3, **settings).fit(prepared.copy(), checkpoint_dir=ck, checkpoint_every=1, resume=True)
    assert resumed.history.epochs_run == 3
    shuffled = prepared.copy()
    labels = shuffled.obs["group"].to_numpy()
    shuffled.obs["group"] = np.random.default_rng(0).permutation(labels)
    assert (shuffled.obs["group"].to_numpy() != labels).any() and set(shuffled.obs["group"]) == set(labels)
    write_h5ad(shuffled, tmp_path / "b.h5ad")
    capsys.readouterr()
    rc = cli("train", tmp_path / "b.h5ad", "-o", tmp_path / "m", *FAST, "--batch-key", "group", "--resume", "-q")
    line = _one_line(capsys.readouterr().err)
    assert rc == 2
    assert f"checkpoint {ck / CHECKPOINT_FILE} was made on other data (the cells' batch or covariate values differ)" in line
    assert not (tmp_path / "m").exists() and (ck / CHECKPOINT_FILE).is_file()


def test_resume_names_a_changed_continuous_covariate_as_such(files, tmp_path):
    prepared = anndata.read_h5ad(files["prepared"])
    prepared.obs["depth"] = np.random.default_rng(0).permutation(prepared.n_obs).astype(float)  # exact sums
    ck = tmp_path / "m.ckpt"
    settings = dict(n_latent=4, hidden=(16,), batch_size=32, num_threads=1, continuous_covariate_keys=["depth"])
    DAE(epochs=2, **settings).fit(prepared, checkpoint_dir=ck, checkpoint_every=1)
    shifted = prepared.copy()
    shifted.obs["depth"] += 1.0
    with pytest.raises(UserError, match=r"other data \(covariates differ \(categorical levels, or a continuous "
                                        r"covariate's mean or SD\)\): delete"):
        DAE(epochs=3, **settings).fit(shifted, checkpoint_dir=ck, resume=True)
    swapped = prepared.copy()  # the same mean and SD (to the bit), other values per cell
    swapped.obs["depth"] = prepared.obs["depth"].to_numpy()[::-1]
    with pytest.raises(UserError, match=r"other data \(the cells' batch or covariate values differ\)"):
        DAE(epochs=3, **settings).fit(swapped, checkpoint_dir=ck, resume=True)


def test_resume_refuses_a_checkpoint_with_covariates_that_does_not_record_each_cells_values(files, tmp_path,
                                                                                          monkeypatch):
    """A checkpoint written before the per-cell record (covariate levels only) cannot show the cells kept their
    batches: refused with the way out, not trusted."""
    import genodae.model as gm

    prepared = anndata.read_h5ad(files["prepared"])
    ck = tmp_path / "m.ckpt"
    settings = dict(n_latent=4, hidden=(16,), batch_size=32, num_threads=1, batch_key="group")
    record = gm.DAE._data_record
    with monkeypatch.context() as m:
        m.setattr(gm.DAE, "_data_record", lambda self, a: {k: v for k, v in record(self, a).items()
                                                            if k != "cell_covariates"})
        DAE(epochs=2, **settings).fit(prepared, checkpoint_dir=ck, checkpoint_every=1)
    with pytest.raises(UserError, match=r"does not record each cell's batch or covariate values \(written by an older "
                                        r"genodae\): delete .* or train without --resume \(resume=False in Python\)"):
        DAE(epochs=3, **settings).fit(prepared.copy(), checkpoint_dir=ck, resume=True)


@pytest.mark.parametrize("command", ["train", "run"])
def test_a_checkpoint_folder_that_is_a_file_is_refused_before_training(files, tmp_path, capsys, monkeypatch, command):
    monkeypatch.setattr(DAE, "fit", lambda *a, **k: pytest.fail("trained although checkpoints cannot be written"))
    if command == "train":
        ck = tmp_path / "m.ckpt"
        ck.write_text("x")
        args = ["train", files["prepared"], "-o", tmp_path / "m"]
        fix = "remove it, or give another folder with --checkpoint-dir"
    else:
        (tmp_path / "out").mkdir()
        ck = tmp_path / "out" / "model.ckpt"
        ck.write_text("x")
        args = ["run", files["counts"], "-o", tmp_path / "out"]
        fix = f"remove {ck} (genodae run keeps its checkpoints there), or give another output folder (-o)"
    assert cli(*args, *FAST, "--checkpoint-every", "1", "-q") == 2
    line = _one_line(capsys.readouterr().err)
    assert line.endswith(f"checkpoint folder {ck} is a file: {fix}"), line
    assert ck.read_text() == "x"


def test_run_refuses_a_sample_sheet_of_its_batches_sheet_that_it_would_rewrite(files, tmp_path, capsys, monkeypatch):
    """A file named inside --batches (a data file or its obs sample sheet) is an input too."""
    monkeypatch.setattr(DAE, "fit", lambda *a, **k: pytest.fail("trained although an input is an output"))
    raw = anndata.read_h5ad(files["counts"])
    write_h5ad(raw[:100].copy(), tmp_path / "b1.h5ad")
    write_h5ad(raw[100:].copy(), tmp_path / "b2.h5ad")
    out = tmp_path / "out"
    out.mkdir()
    (out / "embedding.tsv").write_text("cell\tx\n")
    (tmp_path / "s.csv").write_text("path,batch,obs\nb1.h5ad,p1,out/embedding.tsv\nb2.h5ad,p2,\n")
    assert cli("run", "--batches", tmp_path / "s.csv", "-o", out, *FAST, "-q") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"is embedding.tsv of the output folder {out}, which genodae run rewrites" in line, line
    assert (out / "embedding.tsv").read_text() == "cell\tx\n"


# --- separate processes -----------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def test_python_dash_m_genodae_version():
    r = subprocess.run([sys.executable, "-m", "genodae", "--version"], capture_output=True, text=True,
                       timeout=120, env=_env())
    assert r.returncode == 0
    assert r.stdout.strip() == f"genodae {genodae.__version__}"


@pytest.mark.slow  # two interpreter start-ups with torch and scanpy
def test_user_error_in_a_real_process(files, tmp_path):
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "genodae", "train", str(files["prepared"]), "-o", str(out), "--n-latent", "500"]
    r = subprocess.run(cmd + ["-q"], capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    line = _one_line(r.stderr)  # -q: only the error
    assert line.startswith("genodae train: error:") and "n_latent=500" in line
    assert not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0]


# --- count likelihoods on the command line (issue 11) --------------------------------------------------------


def test_gene_likelihood_flag_and_denoised_scale(files, tmp_path):
    m = tmp_path / "m"
    assert cli("train", files["prepared"], "-o", m, *FAST, "--gene-likelihood", "nb") == 0
    assert json.loads((m / "model.json").read_text())["gene_likelihood"] == "nb"
    out = tmp_path / "e.h5ad"
    assert cli("embed", files["counts"], m, "-o", out, "--denoised", "--denoised-scale", "counts") == 0
    a = anndata.read_h5ad(out)
    assert a.uns["dae"]["denoised_scale"] == "counts" and a.uns["dae"]["gene_likelihood"] == "nb"
    used = a.var_names.isin(json.loads((m / "model.json").read_text())["genes"])
    np.testing.assert_allclose(a.layers["dae_denoised"][:, used].sum(1), np.asarray(a.X[:, used].sum(1)).ravel(), rtol=1e-4)


def test_retired_loss_flag_is_not_taken_for_loss_on(files, tmp_path, capsys):
    assert cli("train", files["prepared"], "-o", tmp_path / "m", *FAST, "--loss", "mse") == 2
    line = _one_line(capsys.readouterr().err)
    assert "unrecognized arguments: --loss" in line and not (tmp_path / "m").exists()


def test_denoised_scale_without_denoised_is_refused(files, tmp_path, capsys):
    assert cli("embed", files["counts"], files["model"], "-o", tmp_path / "e.h5ad", "--denoised-scale", "counts") == 2
    assert "add --denoised" in _one_line(capsys.readouterr().err) and not (tmp_path / "e.h5ad").exists()


@pytest.mark.parametrize("step", ["prepare", "embed"])
def test_output_that_is_the_input_is_refused(files, tmp_path, capsys, step):
    src = tmp_path / "in.h5ad"
    src.write_bytes(files["counts"].read_bytes())
    before = src.read_bytes()
    args = [step, src] + ([files["model"]] if step == "embed" else []) + ["-o", src]
    assert cli(*args) == 2
    assert "is the input file" in _one_line(capsys.readouterr().err)
    assert src.read_bytes() == before


# --- found by a newcomer trying to break the counts-only training reader and the outputs ------------------


def test_train_on_a_layer_of_a_prepared_file(files, tmp_path):
    """A layer given with --layer is read (the counts-only reader is for training on X)."""
    a = anndata.read_h5ad(files["prepared"])
    a.layers["lognorm"] = a.X.copy()
    write_h5ad(a, tmp_path / "p.h5ad")
    assert cli("train", tmp_path / "p.h5ad", "-o", tmp_path / "m", "--layer", "lognorm", *FAST) == 0
    assert DAE.load(tmp_path / "m").layer == "lognorm"


def test_train_backed_with_a_layer_says_backed_reads_x(files, tmp_path, capsys):
    assert cli("train", files["prepared"], "-o", tmp_path / "m", "--backed", "--layer", "counts", *FAST) == 2
    msg = _one_line(capsys.readouterr().err)
    assert "training from disk (backed, --backed) reads X, not layers['counts']" in msg
    assert not (tmp_path / "m").exists()


def test_train_refuses_unprepared_raw_counts(files, tmp_path, capsys):
    assert cli("train", files["counts"], "-o", tmp_path / "m", *FAST) == 2
    msg = _one_line(capsys.readouterr().err)
    assert "X holds raw counts (non-negative integers) and the data were not prepared: run genodae prepare" in msg
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("backed", [False, True])
def test_prepare_require_obs_fails_before_any_work(files, tmp_path, capsys, backed):
    """A misspelt label column is named at prepare (both the chunked and the in-memory path), not after training."""
    have = list(genodae.read(files["counts"]).obs.columns)
    out = tmp_path / "p.h5ad"
    extra = ["--backed"] if backed else ["--n-top-genes", "150"]
    assert cli("prepare", files["counts"], "-o", out, *extra, "--require-obs", "cell_typ", "other") == 2
    err = _one_line(capsys.readouterr().err)
    assert "obs has no column 'cell_typ', 'other'" in err and "labels" in err
    assert not out.exists()
    assert cli("prepare", files["counts"], "-o", out, *extra, "--require-obs", *have) == 0
    assert out.exists()


def test_prepare_output_must_be_h5ad_and_a_failure_leaves_no_folder(files, tmp_path, capsys):
    assert cli("prepare", files["counts"], "-o", tmp_path / "out.csv") == 2
    assert "out.csv must end in .h5ad" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out.csv").exists()
    assert cli("prepare", tmp_path / "missing.h5ad", "-o", tmp_path / "new" / "out.h5ad") == 2
    assert not (tmp_path / "new").exists()  # the output's folder is made only when there is something to write
