"""Helpers shared by the benchmark scripts in bench/ (one copy of each; never imported by the library or the tests).

A script run as ``python bench/X.py`` has bench/ first on ``sys.path``, so ``import _common`` needs no path set-up.
Importing this module puts the repository root on ``sys.path`` (once, here) so the scripts use the genodae of this
source tree without installing it (a tree named in ``PYTHONPATH`` still comes first). It imports only the standard
library at module level: ``bench/memory.py`` measures child processes whose peak RSS includes what the parent had
at fork time, so numpy, pandas, scipy and torch are imported inside the functions that need them.

Contents: paths and the run's record (``command``, ``utc_now``, ``machine``, ``versions``, ``git_head``); argparse
boilerplate (``parser`` and ``add_*`` options); result writing (``write_results``, ``write_keeping_notes``) and
markdown cells/tables (``pm``, ``md_table``); the labelled data sets and their loaders (``DATASETS``, ``load_raw``)
with the slices every method sees (``log_hvg``, ``counts_hvg``, ``scaled_input``, ``rescale``); shared methods
(``set_threads``, ``embed_genodae``, ``train_scvi``) and the embedding score (``score_embedding``); generated
matrices (``make_csr``, ``write_backed``, ``generated_counts``) and cgroups (``Cgroup``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DATA_DIR = REPO.parent / "shared" / "data"  # the default --data-dir of most scripts

# This source tree's genodae, installed or not (the one place in bench/ that touches sys.path): after the script's
# folder and any PYTHONPATH entries (so that a --src/--before tree given that way wins), before site-packages.
_PYTHONPATH = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if str(REPO) not in map(os.path.abspath, filter(None, sys.path)):
    sys.path.insert(max((i + 1 for i, p in enumerate(sys.path) if p and os.path.abspath(p) in _PYTHONPATH),
                        default=1), str(REPO))


def shared_data_dir() -> Path:
    """``$GENODAE_SHARED_DATA``, else ``../shared/data`` (the default of the scripts that honour the variable)."""
    return Path(os.environ.get("GENODAE_SHARED_DATA", DATA_DIR))


# --- the run's record ------------------------------------------------------------------------------------


def command(script: str, argv: list[str] | None = None) -> str:
    """``python bench/SCRIPT.py ARGS`` as the run was called (``argv`` None: ``sys.argv[1:]``)."""
    return f"python bench/{script}.py " + " ".join(argv if argv is not None else sys.argv[1:])


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_average(nd: int = 1) -> str:
    """The three load averages, e.g. ``"1.9 2.0 2.1"``."""
    return " ".join(f"{x:.{nd}f}" for x in os.getloadavg())


def load1() -> float:
    """The 1-minute load average, rounded to 0.1."""
    return round(os.getloadavg()[0], 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def memory_bytes() -> int | None:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None


def machine(torch_threads: bool = False) -> dict:
    """Platform, CPU model, cores, memory and Python; with ``torch_threads`` also torch's thread count and the
    load averages now."""
    out = {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
           "memory_bytes": memory_bytes(), "python": platform.python_version()}
    if torch_threads:
        import torch

        out.update(torch_threads=torch.get_num_threads(), load_average=load_average())
    return out


def machine_line(memory: str = "GiB") -> str:
    """One line: ``CPU, N cores, M GiB, platform`` (``memory`` is the unit text after the size)."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {memory_bytes() / 2**30:.0f} {memory}, {platform.platform()}"


VERSIONS = ("genodae", "torch", "numpy", "scipy", "scikit-learn", "scanpy", "anndata", "igraph", "leidenalg")
SCVI_VERSIONS = ("scvi-tools", "lightning", "jax", "scikit-learn", "pandas")  # also recorded beside scVI


def versions(extra: tuple[str, ...] = ()) -> dict:
    """Installed versions of the packages the embedding benchmarks use (and ``extra``); None when absent.
    genodae's is the imported package's ``__version__`` (the source tree's, not an installed copy's)."""
    out = {}
    for p in (*VERSIONS, *extra):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    try:
        import genodae

        out["genodae"] = genodae.__version__
    except ModuleNotFoundError:
        pass
    return out


def git_head(path: Path = REPO) -> str:
    """The short commit of HEAD (empty when git cannot tell)."""
    return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


# --- command line ----------------------------------------------------------------------------------------


def parser(doc: str, full: bool = False) -> argparse.ArgumentParser:
    """The scripts' parser: the docstring's first paragraph and the defaults in ``--help``, or (``full``) the whole
    docstring as written."""
    if full:
        return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_seeds(p: argparse.ArgumentParser, default=(0, 1, 2)) -> None:
    p.add_argument("--seeds", nargs="+", type=int, default=list(default))


def add_threads(p: argparse.ArgumentParser, help: str = "torch CPU threads (1: the machine is shared)") -> None:
    p.add_argument("--threads", type=int, default=1, help=help)


def add_scvi_epochs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scvi-epochs", type=int, default=100, help="cap on scVI's max_epochs (early stopping on)")


def add_data_dir(p: argparse.ArgumentParser, default: Path = DATA_DIR, **kw) -> None:
    p.add_argument("--data-dir", type=Path, default=default, **kw)


def add_out(p: argparse.ArgumentParser, name: str, help: str = "writes OUT.json and OUT.md") -> None:
    p.add_argument("--out", type=Path, default=RESULTS / name, help=help)


def add_resume(p: argparse.ArgumentParser, what: str = "the runs in OUT.json") -> None:
    p.add_argument("--resume", action="store_true", help=f"keep {what} and skip them")


def add_variant(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON", help=help)


def parse_variants(p: argparse.ArgumentParser, items: list[str]) -> dict[str, dict]:
    """``--variant NAME=JSON`` options as {NAME: settings}."""
    variants = {}
    for v in items:
        name, _, js = v.partition("=")
        try:
            variants[name] = json.loads(js)
        except json.JSONDecodeError as e:
            p.error(f"--variant {v!r}: settings are not JSON ({e})")
    return variants


def add_source_tree(p: argparse.ArgumentParser) -> None:
    """``--label``, ``--src`` and ``--git``: measure the genodae of another source tree (memory.py, threads.py)."""
    p.add_argument("--label", default="after")
    p.add_argument("--src", type=Path, default=REPO, help="folder holding the genodae package to measure")
    p.add_argument("--git", default=None, help="what to record as the measured version (default: HEAD of this tree)")


def measured_version(a: argparse.Namespace, src: Path) -> str:
    """What ``--src``/``--git`` say is measured: ``--git``, else HEAD of this tree (naming ``--src`` if another)."""
    head = git_head()
    return a.git or (head if src == REPO else f"{head} (--src {a.src})")


# --- results ---------------------------------------------------------------------------------------------


def write_results(out: Path, record: dict, md: str | None = None) -> None:
    """``OUT.json`` (the record, indented) and, when given, ``OUT.md``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    if md is not None:
        Path(f"{out}.md").write_text(md)


def run_record(meta: dict, summary, runs) -> dict:
    """The JSON of a run: its metadata, the summary table (a DataFrame, as records) and every run."""
    return {**meta, "summary": summary.to_dict(orient="records"), "runs": runs}


def write_keeping_notes(path: Path, text: str, marker: str = "\n## Reading") -> None:
    """Write ``text`` to ``path``, keeping any hand-written notes of the old file from ``marker`` on."""
    notes = ""
    if path.exists() and marker in path.read_text():
        notes = marker + path.read_text().split(marker, 1)[1]
    path.write_text(text + notes)


def pm(r, m: str, nd: int = 3, blank: str | None = None) -> str:
    """``mean ± sd`` of metric ``m`` from a summary row (``m_mean``, ``m_std``; a missing sd reads 0). With
    ``blank``, a missing or NaN mean gives ``blank``."""
    mean, sd = r.get(f"{m}_mean"), r.get(f"{m}_std")
    if blank is not None and (mean is None or mean != mean):
        return blank
    sd = 0.0 if sd is None or sd != sd else sd
    return f"{mean:.{nd}f} ± {sd:.{nd}f}"


def md_table(df, nd: int = 3) -> str:
    """A DataFrame as a markdown table, floats with ``nd`` decimals."""
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        out.append("| " + " | ".join(f"{v:.{nd}f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(out)


def mean_sd(df, by: list[str], metrics) -> object:
    """Mean and sd of ``metrics`` (those present) per ``by`` group, columns ``m_mean``/``m_std``, plus
    ``n_seeds`` (rows per group); groups in order of appearance, ``by`` as columns."""
    g = df.groupby(by, sort=False)
    out = g[[m for m in metrics if m in df]].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_seeds"] = g.size()
    return out


# --- data ------------------------------------------------------------------------------------------------

# The labelled sets of the embedding benchmarks: name -> (file or folder under the data dir, None for scanpy's
# built-in pbmc68k_reduced; label column). Loaded by ``load_raw``.
DATASETS = {
    "pbmc68k": (None, "bulk_labels"),
    "pbmc4k": ("scrna/pbmc4k_top2000.h5ad", "cluster"),
    "mouse_bladder": ("scrna/mouse_bladder_top2000.h5ad", "cell_type"),
    # sparser stress sets: every count binomially thinned to 20% (seeded), like a shallower run
    "pbmc4k_thin20": ("scrna/pbmc4k_top2000.h5ad", "cluster"),
    "mouse_bladder_thin20": ("scrna/mouse_bladder_top2000.h5ad", "cell_type"),
    "pbmc3k_cd8_cd14": ("scrna/pbmc3k_cd8_cd14_mtx", "celltype"),
    "celseq2_5cl": ("scrna/sc_celseq2_5cl_p1.count.csv.gz", "cell_line_demuxlet"),
    "tcga_brca": ("bulk/tcga_brca_mixomics", "subtype"),
}
THIN = {"pbmc4k_thin20": 0.2, "mouse_bladder_thin20": 0.2}


def absent(name: str, path: Path, who: str | None = None) -> None:
    """Say on stderr that a data set is skipped because ``path`` is missing (and return None)."""
    who = who or Path(sys.argv[0]).stem
    print(f"[{who}] skipping {name}: {path} not found", file=sys.stderr)
    return None


def load_celseq2_plates(data_dir: Path, who: str | None = None):
    """The three CellBench CEL-seq2 plates (5 cell lines) as one counts AnnData: singlets only (demuxlet SNG), ERCC
    spike-ins dropped, the genes all plates share; obs ``label`` (cell line) and ``batch`` (p1/p2/p3), cell names
    made unique by their plate (``p1/A1`` …: the plates share barcodes). None when a file is absent."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    parts = []
    for p in (1, 2, 3):
        f = data_dir / "scrna" / f"sc_celseq2_5cl_p{p}.count.csv.gz"
        m = data_dir / "scrna" / f"sc_celseq2_5cl_p{p}.metadata.csv.gz"
        if not f.exists() or not m.exists():
            return absent("celseq2_3plates", f if not f.exists() else m, who)
        counts = pd.read_csv(f, index_col=0)  # genes × cells
        counts = counts.loc[~counts.index.astype(str).str.startswith("ERCC-")]
        meta = pd.read_csv(m, index_col=0)
        meta = meta.loc[counts.columns.intersection(meta.index)]
        meta = meta[meta["demuxlet_cls"].astype(str) == "SNG"]
        a = ad.AnnData(X=sp.csr_matrix(counts[meta.index].T.to_numpy(np.float32)),
                       obs=pd.DataFrame({"label": meta["cell_line_demuxlet"].astype(str).to_numpy(),
                                         "batch": f"p{p}"}, index=[f"p{p}/{b}" for b in meta.index]),
                       var=pd.DataFrame(index=counts.index.astype(str)))
        parts.append(a)
    return ad.concat(parts, join="inner")


def load_raw(name: str, data_dir: Path, who: str | None = None):
    """AnnData of raw counts (log values for TCGA) with string labels in ``obs['label']``; None when absent."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    import genodae

    path, key = DATASETS[name]
    if path is None:  # pbmc68k_reduced: X is z-scored; recover counts exactly from raw and n_counts
        import scanpy as sc

        ref = sc.datasets.pbmc68k_reduced()
        logn = ref.raw.X.toarray() if sp.issparse(ref.raw.X) else np.asarray(ref.raw.X)
        counts = np.round(np.expm1(logn) * ref.obs["n_counts"].to_numpy()[:, None] / 1e4)
        adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=ref.obs[[key]].copy(),
                           var=pd.DataFrame(index=ref.raw.var_names))
        adata.obs["label"] = adata.obs[key].astype(str).astype("category")
        return adata
    f = data_dir / path
    if name == "pbmc3k_cd8_cd14":
        if not f.exists():
            return absent(name, f, who)
        adata = genodae.read(f, sample_sheet=f / "cells_metadata.csv")
    elif name == "celseq2_5cl":
        m = data_dir / "scrna" / "sc_celseq2_5cl_p1.metadata.csv.gz"
        if not f.exists() or not m.exists():
            return absent(name, f, who)
        adata = genodae.read(f, sample_sheet=m)  # R write.csv layout: keyed by its row names
        adata = adata[adata.obs["demuxlet_cls"].astype(str) == "SNG"].copy()
    elif name == "tcga_brca":
        if not f.exists():
            return absent(name, f, who)
        parts = []
        for split in ("train", "test"):
            X = pd.read_csv(f / f"data.{split}.mrna.csv", index_col=0)
            y = pd.read_csv(f / f"data.{split}.subtype.csv", index_col=0)
            X.index = [f"{split}_{s}" for s in X.index]
            y.index = [f"{split}_{s}" for s in y.index]
            parts.append((X, y.loc[X.index]))
        X = pd.concat([p[0] for p in parts])
        obs = pd.concat([p[1] for p in parts])
        adata = ad.AnnData(X=X.to_numpy(np.float32), obs=obs, var=pd.DataFrame(index=X.columns.astype(str)))
    else:  # an .h5ad of counts, maybe thinned
        if not f.exists():
            return absent(name, f, who)
        adata = ad.read_h5ad(f)
        if name in THIN:  # keep each count with probability p (fixed seed): same cells, shallower sequencing
            X = sp.csr_matrix(adata.X)
            X.data = np.random.default_rng(0).binomial(X.data.astype(np.int64), THIN[name]).astype(np.float32)
            X.eliminate_zeros()
            adata.X = X
            adata = adata[np.asarray(X.sum(axis=1)).ravel() > 0].copy()
        adata.obs["label"] = adata.obs[key].astype(str).astype("category")
        return adata
    adata = adata[adata.obs[key].notna()].copy()
    adata.obs["label"] = adata.obs[key].astype(str).astype("category")
    return adata


def used_genes(adata):
    """Boolean mask of the genes the model uses (``var['highly_variable']``)."""
    return adata.var["highly_variable"].to_numpy(bool)


def log_hvg(adata, dense: bool = True):
    """The log-normalised (or log-scale) values of the genes the model uses, cells × HVG, float32."""
    import numpy as np
    import scipy.sparse as sp

    X = adata.X[:, used_genes(adata)]
    if dense:
        return (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(np.float32)
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)


def counts_hvg(adata):
    """The raw counts (``layers['counts']``) of the genes the model uses."""
    return adata.layers["counts"][:, used_genes(adata)]


def is_count_data(adata) -> bool:
    return adata.uns["genodae_prepare"]["input_kind"] == "counts"


def scaled_input(adata):
    """Dense model input exactly as genodae builds it: (x - offset) / scale on the used genes (clipped for minmax)."""
    import numpy as np
    import scipy.sparse as sp

    used = used_genes(adata)
    X = adata.X[:, used]
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    off = adata.var["genodae_offset"].to_numpy(np.float32)[used]
    scl = adata.var["genodae_scale"].to_numpy(np.float32)[used]
    Z = (X.astype(np.float32) - off) / scl
    if adata.uns["genodae_prepare"]["params"]["scaling"] == "minmax":
        Z = np.clip(Z, 0, 1)
    return Z


def rescale(base, scaling: str):
    """The same prepared genes with another per-gene scaling (what prepare(scaling=...) would compute)."""
    from genodae.pp import scaling_params

    ad = base.copy()
    used = used_genes(ad)
    off, scl = scaling_params(ad.X[:, used], scaling)
    ad.var.loc[used, "genodae_offset"] = off
    ad.var.loc[used, "genodae_scale"] = scl
    prep = dict(ad.uns["genodae_prepare"])
    prep["params"] = {**prep["params"], "scaling": scaling}
    prep["scaling_auto"] = False  # asked for, as prepare(scaling=...) records it
    ad.uns["genodae_prepare"] = prep
    return ad


# --- methods ---------------------------------------------------------------------------------------------

PCA_COMPS = 50


def factor_loadings(X, genes, method: str, n_components: int, *, seed: int = 0, subsample: float | None = None):
    """(gene loadings as a genes × components DataFrame, cell scores) of PCA, ICA (FastICA) or NMF
    (scikit-learn), the baselines of the signature benchmarks (moved out of ``genodae.signatures`` in issue 15:
    only bench/ used it). PCA is deterministic; to measure its stability across "seeds", pass ``subsample``
    (fraction of cells drawn without replacement with ``seed``), applied to every method alike."""
    import numpy as np
    import pandas as pd
    from sklearn.decomposition import NMF, PCA, FastICA

    rows = np.arange(X.shape[0])
    if subsample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, int(round(subsample * len(rows))), replace=False))
    Xs = X[rows]
    if method == "pca":
        m = PCA(n_components, random_state=seed).fit(Xs)
        L, S = m.components_.T, m.transform(X)
    elif method == "ica":
        m = FastICA(n_components, random_state=seed, whiten="unit-variance", max_iter=1000, tol=1e-3).fit(Xs)
        L, S = m.mixing_, m.transform(X)
    elif method == "nmf":
        m = NMF(n_components, init="nndsvda", random_state=seed, max_iter=500).fit(np.clip(Xs, 0, None))
        L, S = m.components_.T, m.transform(np.clip(X, 0, None))
    else:
        raise ValueError(f"method must be pca, ica or nmf, not {method!r}")
    return pd.DataFrame(L, index=pd.Index(genes), columns=[f"{method}{j}" for j in range(L.shape[1])]), S


def set_threads(n: int = 1) -> None:
    """``n`` torch threads everywhere (2 shared cores: more threads are much slower under load), BLAS too."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:  # BLAS (numpy/scikit-learn) too
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass


def history_info(h) -> dict:
    """Epochs run, best epoch (1-based) and training seconds of a training history (``uns[key]['history']``)."""
    return {"epochs_run": int(h["epochs_run"]), "best_epoch": int(h["best_epoch"]) + 1,
            "train_seconds": float(h["seconds"])}


def embed_genodae(adata, seed: int, threads: int = 1, **settings):
    """(embedding, info, annotated copy) of ``genodae.tl.dae`` on a copy of ``adata`` (CPU, ``threads``),
    with the library defaults plus ``settings``."""
    import numpy as np

    import genodae

    a = adata.copy()
    genodae.tl.dae(a, seed=seed, device="cpu", num_threads=threads, **settings)
    return np.asarray(a.obsm["X_dae"], np.float32), history_info(a.uns["dae"]["history"]), a


def scvi_epochs_for(n_cells: int, cap: int) -> int:
    """scvi-tools' own default, min(round(20000 / n * 400), 400), bounded by ``cap``."""
    return int(min(round(20000 / max(n_cells, 1) * 400), 400, cap))


def train_scvi(adata, seed: int, max_epochs: int, early_stopping: bool = True, batch_size: int = 128,
               threads: int = 1, batch_key: str | None = None, **kw):
    """A trained ``scvi.model.SCVI`` on the raw counts of the HVGs (and the AnnData it was set up on, with
    ``obs[batch_key]`` as its batch when given)."""
    import logging
    import time

    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import scvi
    import torch

    scvi.settings.seed = seed
    scvi.settings.num_threads = threads
    scvi.settings.dl_num_workers = 0
    torch.set_num_threads(threads)
    logging.getLogger("scvi").setLevel(logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    C = counts_hvg(adata)
    C = sp.csr_matrix(C, dtype=np.float32) if sp.issparse(C) else sp.csr_matrix(np.asarray(C, np.float32))
    obs = adata.obs[[batch_key]].copy() if batch_key else pd.DataFrame(index=adata.obs_names)
    a = ad.AnnData(X=C, obs=obs, var=pd.DataFrame(index=adata.var_names[used_genes(adata)]))
    scvi.model.SCVI.setup_anndata(a, batch_key=batch_key)
    model = scvi.model.SCVI(a, **kw)
    t = time.perf_counter()
    model.train(max_epochs=max_epochs, early_stopping=early_stopping, batch_size=batch_size,
                accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                logger=False, enable_checkpointing=False)
    secs = time.perf_counter() - t
    hist = model.history
    n_ep = len(hist["elbo_train"]) if "elbo_train" in hist else max_epochs
    return model, a, {"epochs_run": int(n_ep), "max_epochs": max_epochs, "train_seconds": secs,
                      "n_latent": int(model.module.n_latent)}


def score_embedding(Z, labels, seed: int) -> dict:
    """15-NN accuracy (stratified 5-fold), Leiden ARI/NMI at resolution 1.0 and their number of clusters, the
    cluster-optimal ARI*/NMI*/k* over resolutions 0.1-2.0, and the label silhouette of embedding ``Z``."""
    import anndata as ad
    import numpy as np
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    y = labels.astype(str).to_numpy()
    Z = np.asarray(Z, dtype=np.float32)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    acc = cross_val_score(KNeighborsClassifier(n_neighbors=15), Z, y, cv=cv).mean()
    tmp = ad.AnnData(X=np.zeros((Z.shape[0], 1), np.float32), obsm={"X_emb": Z})
    sc.pp.neighbors(tmp, use_rep="X_emb", n_neighbors=15, random_state=seed)

    def leiden(res: float) -> np.ndarray:
        sc.tl.leiden(tmp, resolution=res, flavor="igraph", n_iterations=2, random_state=seed, directed=False)
        return tmp.obs["leiden"].to_numpy()

    # resolutions 0.1-2.0; 1.0 is the fixed-resolution score. scib's "cluster-optimal" scores: the resolution
    # whose clusters have the best NMI with the labels, then ARI and NMI of those clusters. A fixed resolution
    # rewards embeddings whose noise happens to give about as many clusters as there are labels; this removes
    # that (scib: Luecken et al. 2022).
    grid = {r: leiden(r / 10) for r in range(1, 21)}
    cl = grid[10]
    best = max(((normalized_mutual_info_score(y, c), c) for c in grid.values()), key=lambda t: t[0])
    sil = silhouette_score(Z, y) if np.isfinite(Z).all() and Z.std(0).max() > 0 else float("nan")
    return {"knn_acc": float(acc), "ari": float(adjusted_rand_score(y, cl)),
            "nmi": float(normalized_mutual_info_score(y, cl)), "n_clusters": int(len(set(cl))),
            "ari_opt": float(adjusted_rand_score(y, best[1])), "nmi_opt": float(best[0]),
            "k_opt": int(len(set(best[1]))), "silhouette": float(sil)}


# --- generated data --------------------------------------------------------------------------------------


def make_csr(n_cells: int, n_genes: int, density: float, seed: int):
    """Random CSR with ``density`` non-zeros per row, float32 log1p-like values, int32 indices.

    Filled block by block into preallocated arrays, so generating it never holds two copies.
    """
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    k = max(1, int(round(n_genes * density)))
    data = np.empty(n_cells * k, dtype=np.float32)
    indices = np.empty(n_cells * k, dtype=np.int32)
    step = 10_000
    for start in range(0, n_cells, step):
        n = min(step, n_cells - start)
        keys = rng.random((n, n_genes), dtype=np.float32)
        idx = np.sort(np.argpartition(keys, k, axis=1)[:, :k], axis=1)
        del keys
        indices[start * k : (start + n) * k] = idx.ravel()
        data[start * k : (start + n) * k] = np.log1p(rng.gamma(1.0, 4.0, size=n * k)).astype(np.float32)
    indptr = np.arange(0, n_cells * k + 1, k, dtype=np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes), copy=False)


def generated_counts(cells: int, genes: int, density: float = 0.1, seed: int = 0, chunk: int = 20_000):
    """Counts as float32 CSR with ``density`` non-zeros per row: gamma gene means, a gamma size factor per cell,
    Poisson + 1 at the non-zeros. Built chunk by chunk (a dense 1M × 2,000 random matrix would need 8 GB)."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    k = int(genes * density)
    mu = rng.gamma(0.6, 3.0, size=genes)
    data = np.empty(cells * k, np.float32)
    indices = np.empty(cells * k, np.int32)
    for s in range(0, cells, chunk):
        n = min(chunk, cells - s)
        idx = np.sort(np.argpartition(rng.random((n, genes), dtype=np.float32), k, axis=1)[:, :k], axis=1)
        vals = rng.poisson(mu[idx] * rng.gamma(2.0, 0.5, size=(n, 1))) + 1
        data[s * k : (s + n) * k] = vals.ravel()
        indices[s * k : (s + n) * k] = idx.ravel()
    return sp.csr_matrix((data, indices, np.arange(0, cells * k + 1, k, dtype=np.int64)), shape=(cells, genes))


def as_anndata(X):
    """An AnnData of ``X`` with cells ``c0 …`` and genes ``g0 …``."""
    import anndata as ad
    import pandas as pd

    return ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]),
                      var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]))


def write_backed(X, path: Path) -> None:
    """Write X as an .h5ad (anndata) so the backed path can be timed; not run on the GPU machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    as_anndata(X).write_h5ad(path)


# --- cgroups (root only) ---------------------------------------------------------------------------------


def own_cgroup(controller: str) -> str:
    """This process's cgroup path for ``controller`` ("" = the v2 unified hierarchy)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if (controller == "" and ctrls == "") or controller in ctrls.split(","):
            return path.lstrip("/")
    return ""


class Cgroup:
    """A cgroup folder ``dir`` that child processes join (``join``, in the child before exec) and that is removed
    afterwards (``remove``); subclasses set the limit."""

    dir: Path

    def join(self) -> None:
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        import time

        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)
