"""The HDF5 family, recognised by its groups whatever the extension: ``.h5ad`` (also opened backed,
:func:`read_backed`), ``.loom``, 10x Genomics ``.h5`` (Cell Ranger 3+ ``matrix/``: Gene Expression kept, other
feature types set aside and said; Cell Ranger 1–2: one group per genome), and AnnData zarr stores. h5Seurat,
MuData and Cell Ranger's molecule_info.h5 are refused with what to give instead; damaged or mislabelled files
are reported as :class:`~genodae.errors.UserError`. Several genomes are read as one matrix with
``var["genome"]`` (as Cell Ranger 3+ does) or one is chosen with ``genome``."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import UserError
from ._common import SUPPORTED_FORMATS

logger = logging.getLogger("genodae")


def _read_h5ad(path: Path) -> anndata.AnnData:
    _check_hdf5(path, "h5ad")
    try:
        adata = anndata.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for damaged files
        raise _corrupt(path, "h5ad", err) from err
    if adata.X is None:
        raise UserError(f"{path} has no X matrix (only layers/metadata): store the expression values in X.")
    return adata


def read_backed(path: str | os.PathLike) -> anndata.AnnData:
    """Open an .h5ad backed (``mode="r"``): X stays on disk and is read in pieces (data larger than RAM).

    Unlike ``anndata.read_h5ad(path, backed="r")``, which reads every layer into memory, layers stay on disk
    too: ``adata.layers`` is empty and :func:`backed_layer` gives a layer as an on-disk matrix (rows read on
    demand). obs, var, obsm, varm and uns are read (they are small). Only the file's integrity is checked
    here; values were checked when the file was prepared.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Input file not found: {path}. Check the path in your command or config.")
    if path.suffix.lower() != ".h5ad":
        raise UserError(f"{path}: backed reading needs an .h5ad file (write one with genodae prepare).")
    _check_hdf5(path, "h5ad")
    try:
        with warnings.catch_warnings():  # duplicate names: anndata's raw warning; callers check and say it once
            warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
            return _open_backed(path)
    except Exception as err:  # h5py/anndata raise many types for damaged files
        raise _corrupt(path, "h5ad", err) from err


def _open_backed(path: Path) -> anndata.AnnData:
    import h5py
    from anndata.io import read_elem

    f = h5py.File(path, "r")
    try:
        if "encoding-type" not in f.attrs or "X" not in f:  # old layouts, or no X: anndata's own reader
            f.close()
            return anndata.read_h5ad(path, backed="r")
        d = {k: read_elem(f[k]) for k in ("obs", "var", "obsm", "varm", "obsp", "varp", "uns") if k in f}
        if isinstance(f.get("raw"), h5py.Group):  # anndata expects raw's var (its X stays on disk), else it fails
            d["raw"] = {k: read_elem(f["raw"][k]) for k in ("var", "varm") if k in f["raw"]}
        return anndata.AnnData(filename=f, **d)
    except BaseException:
        f.close()
        raise


def read_sharing(path: str | os.PathLike, *, x_from_counts: bool = False) -> anndata.AnnData:
    """Read an .h5ad into memory, with every CSR layer whose sparsity structure equals X's (a prepared file's
    ``layers["counts"]`` and its log-normalised X) sharing X's ``indices`` and ``indptr`` arrays instead of holding
    a copy: a third less memory for the two matrices. For read-only use (training): an in-place change of the
    structure of one (``sort_indices``, ``eliminate_zeros``) would change the other.

    ``x_from_counts``: when X of a file prepared from counts is exactly what it would be recomputed from
    ``layers["counts"]`` (``log1p(target_sum · counts / cell total)``, checked entry by entry, reading X from disk in
    chunks), X is not read at all: the AnnData comes back with ``X=None`` and only the counts in memory, half the
    bytes, and :meth:`genodae.DAE.fit` computes the input one minibatch at a time. Otherwise (another transform,
    a changed X) X is read as usual."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Input file not found: {path}. Check the path in your command or config.")
    _check_hdf5(path, "h5ad")
    try:
        return _read_sharing(path, x_from_counts)
    except UserError:
        raise
    except Exception as err:  # h5py/anndata raise many types for damaged files
        raise _corrupt(path, "h5ad", err) from err


def _same(a, b, chunk: int = 1 << 22) -> bool:
    """Whether two 1-d arrays or HDF5 datasets hold the same values, read a chunk at a time."""
    if a.shape != b.shape:
        return False
    return all(np.array_equal(a[s : s + chunk], b[s : s + chunk]) for s in range(0, a.shape[0], chunk))


def _x_is_lognormalized_counts(f, uns: dict, chunk: int = 1 << 22) -> bool:
    """Whether X of the open .h5ad ``f`` is exactly (to the bit) what training computes from its ``layers["counts"]``
    (:class:`genodae.train.LogNormalizedCounts`: ``log1p(counts / float32(cell total / target_sum))`` in float32),
    read a chunk of rows at a time; any other X (edited after prepare, another transform or precision) is not."""
    from .._keys import PREP as PREP_KEY

    prep = uns.get(PREP_KEY) or {}
    counts = f["layers"].get("counts") if "layers" in f else None
    X = f["X"]
    if (not str(prep.get("transform", "")).endswith("normalize_total+log1p") or counts is None
            or X.attrs.get("encoding-type") != "csr_matrix" or counts.attrs.get("encoding-type") != "csr_matrix"
            or tuple(X.attrs["shape"]) != tuple(counts.attrs["shape"])
            or not _same(X["indptr"], counts["indptr"]) or not _same(X["indices"], counts["indices"])):
        return False
    target_sum = float(prep["params"]["target_sum"])
    indptr = X["indptr"][...]
    start = 0
    while start < len(indptr) - 1:  # rows start:stop hold about `chunk` stored values
        stop = max(int(np.searchsorted(indptr, indptr[start] + chunk, side="right")) - 1, start + 1)
        lo, hi = int(indptr[start]), int(indptr[stop])
        c = np.asarray(counts["data"][lo:hi], dtype=np.float32)
        per_row = np.diff(indptr[start : stop + 1])
        rows = np.repeat(np.arange(stop - start), per_row)
        totals = np.bincount(rows, weights=c.astype(np.float64), minlength=stop - start)
        factors = (totals / target_sum).astype(np.float32)
        x = X["data"][lo:hi]
        if x.dtype != np.float32 or not np.array_equal(x, np.log1p(c / factors[rows])):
            return False
        start = stop
    return True


def _read_sharing(path: Path, x_from_counts: bool = False) -> anndata.AnnData:
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        if "encoding-type" not in f.attrs or "X" not in f:
            return _read_h5ad(path)
        uns = read_elem(f["uns"]) if "uns" in f else {}
        if x_from_counts and _x_is_lognormalized_counts(f, uns):
            C = read_elem(f["layers"]["counts"])
            if C.nnz < np.iinfo(np.int32).max:
                C.indptr, C.indices = C.indptr.astype(np.int32), C.indices.astype(np.int32, copy=False)
            d = {k: read_elem(f[k]) for k in ("obs", "var", "obsm", "varm", "obsp", "varp") if k in f}
            logger.info("%s: X is log1p-normalised layers['counts']; reading the counts only (the input is computed "
                     "from them one minibatch at a time)", path)
            return anndata.AnnData(**d, uns=uns, layers={"counts": C})
        d = {k: read_elem(f[k]) for k in ("obs", "var", "obsm", "varm", "obsp", "varp", "X") if k in f}
        d["uns"] = uns
        X = d["X"]
        if sparse.issparse(X) and X.indptr.dtype != X.indices.dtype and X.nnz < np.iinfo(np.int32).max:
            X.indptr = X.indptr.astype(np.int32)  # scipy would upcast the indices on every row selection
            X.indices = X.indices.astype(np.int32, copy=False)
        layers = {}
        for name, node in (f["layers"].items() if "layers" in f else ()):
            if (sparse.isspmatrix_csr(X) and node.attrs.get("encoding-type") == "csr_matrix"
                    and tuple(node.attrs["shape"]) == X.shape and _same(node["indptr"], X.indptr)
                    and _same(node["indices"], X.indices)):
                M = sparse.csr_matrix(X.shape, dtype=node["data"].dtype)
                M.data, M.indices, M.indptr = node["data"][...], X.indices, X.indptr  # shared, not copied
                layers[name] = M
            else:
                layers[name] = read_elem(node)
    return anndata.AnnData(**d, layers=layers)


def backed_layer(adata: anndata.AnnData, name: str):
    """``layers[name]`` of a backed AnnData (:func:`read_backed`) as an on-disk matrix (``M[start:stop]`` reads
    rows), or None when the file has no such layer. In-memory AnnData: the layer itself (or None)."""
    if not adata.isbacked:
        return adata.layers[name] if name in adata.layers else None
    import h5py
    from anndata.io import sparse_dataset

    node = adata.file._file.get(f"layers/{name}")
    if node is None:
        return None
    return sparse_dataset(node) if isinstance(node, h5py.Group) else node


def _check_hdf5(path: Path, what: str) -> None:
    import h5py

    try:
        ok = h5py.is_hdf5(path)
    except OSError as err:
        raise _corrupt(path, what, err) from err
    if not ok:
        raise UserError(
            f"{path} is not an HDF5 file, so not a valid .{what}: it is corrupt or truncated, or has the "
            "wrong extension. Re-copy or re-export it."
        )


def _corrupt(path: Path, what: str, err: Exception) -> UserError:
    detail = " ".join(str(err).split())[:200]
    return UserError(
        f"{path} is corrupt or truncated: could not read it as .{what} ({type(err).__name__}: {detail}). "
        "Re-copy or re-export the file."
    )


def _read_loom(path: Path) -> anndata.AnnData:
    import h5py

    _check_hdf5(path, "loom")
    try:
        with h5py.File(path, "r") as f:
            col_keys = set(f["col_attrs"].keys()) if "col_attrs" in f else set()
            row_keys = set(f["row_attrs"].keys()) if "row_attrs" in f else set()
        obs_key = next(
            (k for k in ("CellID", "obs_names", "cell_names", "Cell", "cell") if k in col_keys), "CellID"
        )
        var_key = next((k for k in ("Gene", "var_names", "gene_names", "Accession") if k in row_keys), "Gene")
        adata = anndata.io.read_loom(
            path, sparse=True, cleanup=False, X_name="", obs_names=obs_key, var_names=var_key
        )
    except Exception as err:
        raise _corrupt(path, "loom", err) from err
    return adata


def _read_10x_h5(path: Path, genome: str | None = None) -> anndata.AnnData:
    import h5py

    _check_hdf5(path, "h5")
    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            kind = _hdf5_kind(f)
            if kind == "10x_v3":
                return _read_10x_h5_v3(path, f["matrix"], genome)
            if kind == "10x_legacy":
                return _read_10x_h5_legacy(path, f, genome)
    except UserError:
        raise
    except Exception as err:
        raise _corrupt(path, "h5 (10x)", err) from err
    if kind == "h5ad":
        logger.info("%s is an AnnData file with an .h5 extension: reading it as .h5ad", path)
        adata = _read_h5ad(path)
        adata.uns["_genodae_format"] = "h5ad"
        return adata
    if kind == "loom":
        logger.info("%s is a loom file with an .h5 extension: reading it as .loom", path)
        adata = _read_loom(path)
        adata.uns["_genodae_format"] = "loom"
        return adata
    if kind == "h5seurat":
        raise _r_object_error(path, "an h5Seurat file (SeuratDisk)")
    if kind == "h5mu":
        raise _h5mu_error(path)
    if kind == "molecule_info":
        raise UserError(
            f"{path} is Cell Ranger's molecule_info.h5 (one row per molecule), not a count matrix: give "
            "filtered_feature_bc_matrix.h5 (or the filtered_feature_bc_matrix/ folder) from the same outs/ folder."
        )
    raise UserError(
        f"{path} is an HDF5 file but not a 10x Genomics .h5 matrix (no 'matrix' group; found "
        f"{', '.join(sorted(keys)) or 'nothing'}). Supported: {SUPPORTED_FORMATS}."
    )


_LEGACY_KEYS = {"barcodes", "data", "indices", "indptr", "shape"}


def _hdf5_kind(f) -> str:
    """What an open HDF5 file holds, from its markers: 10x_v3, 10x_legacy, h5ad, loom, h5seurat, h5mu,
    molecule_info or unknown."""
    import h5py

    keys = set(f.keys())
    if isinstance(f.get("matrix"), h5py.Group):
        return "10x_v3"
    if isinstance(f.get("matrix"), h5py.Dataset) and {"row_attrs", "col_attrs"} & keys:
        return "loom"
    if keys and all(isinstance(f[k], h5py.Group) and _LEGACY_KEYS <= set(f[k].keys()) for k in keys):
        return "10x_legacy"
    enc = f.attrs.get("encoding-type", "")
    enc = enc.decode() if isinstance(enc, bytes) else str(enc)
    if enc == "MuData" or ("mod" in keys and isinstance(f["mod"], h5py.Group) and "X" not in keys):
        return "h5mu"
    if {"X", "obs", "var"} <= keys or enc == "anndata":
        return "h5ad"
    if "assays" in keys and "active.assay" in f.attrs:
        return "h5seurat"
    if {"barcode_idx", "feature_idx", "umi"} <= keys or {"barcode_idx", "count"} <= keys and "features" in keys:
        return "molecule_info"
    return "unknown"


def _strings(ds) -> np.ndarray:
    values = ds[()]
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)], dtype=object)


def _csc_to_cells(group, path: Path) -> sparse.csr_matrix:
    shape = tuple(int(x) for x in group["shape"][()])
    mat = sparse.csc_matrix((group["data"][()], group["indices"][()], group["indptr"][()]), shape=shape)
    return sparse.csr_matrix(mat.T)  # stored features × barcodes


def _read_10x_h5_v3(path: Path, m, genome: str | None) -> anndata.AnnData:
    """Cell Ranger 3+ ``matrix/`` group. Gene Expression features are kept; others (Antibody Capture,
    CRISPR Guide Capture, Peaks…) are set aside and said; several genomes are read together with
    ``var["genome"]`` unless ``genome`` chooses one."""
    feats = m["features"]
    var = pd.DataFrame({"gene_ids": _strings(feats["id"])})
    names = _strings(feats["name"]) if "name" in feats else var["gene_ids"].to_numpy()
    n = len(var)
    var["feature_types"] = _strings(feats["feature_type"]) if "feature_type" in feats else "Gene Expression"
    if "genome" in feats:
        var["genome"] = _strings(feats["genome"])
    var.index = pd.Index(names.astype(str))
    X = _csc_to_cells(m, path)
    bars = _strings(m["barcodes"])
    if X.shape != (len(bars), n):
        raise UserError(
            f"{path}: matrix is {X.shape[1]} features × {X.shape[0]} barcodes but lists {n} features and "
            f"{len(bars)} barcodes: the file is damaged; re-copy or re-export it."
        )
    adata = anndata.AnnData(X, obs=pd.DataFrame(index=pd.Index(bars.astype(str))), var=var)
    notes: dict = {}
    adata = _keep_gene_expression(adata, path, notes)
    if "genome" in adata.var:
        adata = _choose_genome_v3(adata, path, genome, notes)
    elif genome is not None:
        raise UserError(f"genome={genome!r} given but {path} does not record genomes: leave out --genome.")
    adata.uns["_genodae_notes"] = notes
    return adata


def _keep_gene_expression(adata: anndata.AnnData, path: Path, notes: dict) -> anndata.AnnData:
    """Keep the 'Gene Expression' features of a multi-feature-type matrix, saying what was set aside."""
    if "feature_types" not in adata.var:
        return adata
    types = adata.var["feature_types"].astype(str)
    counts = types.value_counts(sort=False)
    if set(counts.index) == {"Gene Expression"}:
        return adata
    others = ", ".join(f"{k} ({v})" for k, v in counts.items() if k != "Gene Expression")
    if "Gene Expression" not in counts.index:
        raise UserError(
            f"{path} holds no 'Gene Expression' features, only {others}: genodae models gene expression; "
            "give the gene-expression matrix of this experiment."
        )
    gex = (types == "Gene Expression").to_numpy()
    logger.warning(
        "%s: kept the %d 'Gene Expression' features for the model; set aside (not read) %s", path, gex.sum(), others
    )
    notes["set_aside_features"] = {str(k): int(v) for k, v in counts.items() if k != "Gene Expression"}
    return adata[:, gex].copy()


def _choose_genome_v3(adata: anndata.AnnData, path: Path, genome: str | None, notes: dict) -> anndata.AnnData:
    genomes = list(dict.fromkeys(adata.var["genome"].astype(str)))
    if genome is not None:
        if genome not in genomes:
            raise UserError(
                f"genome={genome!r} is not in {path}: it holds {', '.join(genomes)}; give one of them (--genome)."
            )
        keep = (adata.var["genome"].astype(str) == genome).to_numpy()
        if len(genomes) > 1:
            logger.info("%s: read genome %s (%d genes) of %s", path, genome, keep.sum(), ", ".join(genomes))
        notes["genome"] = genome
        return adata[:, keep].copy()
    if len(genomes) > 1:
        sizes = adata.var["genome"].astype(str).value_counts(sort=False)
        logger.warning(
            "%s holds %d genomes, read as one matrix with var['genome'] (%s), as Cell Ranger does for mixed "
            "species; --genome NAME (genome= in Python) reads one", path, len(genomes),
            ", ".join(f"{g}: {sizes[g]} genes" for g in genomes),
        )
        notes["genomes"] = genomes
    return adata


def _read_10x_h5_legacy(path: Path, f, genome: str | None) -> anndata.AnnData:
    """Cell Ranger 1–2 .h5: one top-level group per genome (data/indices/indptr/shape/barcodes/genes/
    gene_names). One genome just reads; several read together (var["genome"]) when they list the same
    barcodes, or one is chosen with ``genome``."""
    genomes = sorted(f.keys())
    if genome is not None:
        if genome not in genomes:
            raise UserError(
                f"genome={genome!r} is not in {path}: it holds {', '.join(genomes)}; give one of them (--genome)."
            )
        chosen = [genome]
    else:
        chosen = genomes
    parts = []
    for g in chosen:
        grp = f[g]
        ids = _strings(grp["genes"]) if "genes" in grp else None
        names = _strings(grp["gene_names"]) if "gene_names" in grp else ids
        if names is None:
            raise UserError(f"{path}: genome group {g!r} has no genes or gene_names: the file is damaged; re-copy it.")
        X = _csc_to_cells(grp, path)
        bars = _strings(grp["barcodes"])
        if X.shape != (len(bars), len(names)):
            raise UserError(
                f"{path}: genome {g!r} is {X.shape[1]} genes × {X.shape[0]} barcodes but lists {len(names)} genes "
                f"and {len(bars)} barcodes: the file is damaged; re-copy or re-export it."
            )
        var = pd.DataFrame({"gene_ids": ids if ids is not None else names}, index=pd.Index(names.astype(str)))
        parts.append((g, anndata.AnnData(X, obs=pd.DataFrame(index=pd.Index(bars.astype(str))), var=var)))
    notes: dict = {}
    adata = _join_genomes(parts, path, notes, how="--genome NAME (genome= in Python)")
    if genome is not None and len(genomes) > 1:
        logger.info("%s: read genome %s of %s", path, genome, ", ".join(genomes))
        notes["genome"] = genome
    adata.uns["_genodae_notes"] = notes
    return adata


def _join_genomes(parts: list, where, notes: dict, how: str) -> anndata.AnnData:
    """One matrix of the genes of several genomes (``var["genome"]``) when they share their barcodes."""
    if len(parts) == 1:
        g, adata = parts[0]
        return adata
    names = [g for g, _ in parts]
    first = parts[0][1].obs_names
    if any(not a.obs_names.equals(first) for _, a in parts[1:]):
        raise UserError(
            f"{where} holds {len(parts)} genomes ({', '.join(names)}) with different barcodes: choose one with "
            f"{how}."
        )
    for g, a in parts:
        a.var["genome"] = g
    adata = anndata.concat([a for _, a in parts], axis=1, merge="first")
    adata.obs_names = first
    logger.warning(
        "%s holds %d genomes, read as one matrix with var['genome'] (%s), as Cell Ranger 3+ does for mixed "
        "species; %s reads one", where, len(parts), ", ".join(f"{g}: {a.n_vars} genes" for g, a in parts), how,
    )
    notes["genomes"] = names
    return adata


def _r_object_error(path: Path, what: str) -> UserError:
    return UserError(
        f"{path} is {what}, which genodae cannot read: convert it to .h5ad, e.g. in R with SeuratDisk "
        "(SaveH5Seurat(obj, 'x.h5Seurat'); Convert('x.h5Seurat', dest = 'h5ad')), zellkonverter "
        "(writeH5AD(sce, 'x.h5ad')) or sceasy (convertFormat(obj, from = 'seurat', to = 'anndata', "
        "outFile = 'x.h5ad')), then give the .h5ad."
    )


def _h5mu_error(path: Path) -> UserError:
    return UserError(
        f"{path} is a MuData .h5mu file (several modalities), which genodae does not read whole: write its RNA "
        "modality to .h5ad (in Python: mudata.read_h5mu(path)['rna'].write_h5ad('rna.h5ad')) and give that."
    )


def _read_zarr(path: Path) -> anndata.AnnData:
    """An AnnData zarr store (a folder)."""
    try:
        adata = anndata.read_zarr(path)
    except ImportError as err:
        raise UserError(f"{path} is a zarr store, which needs the zarr package: pip install zarr, or write it as "
                        ".h5ad (anndata.read_zarr(path).write_h5ad('x.h5ad')).") from err
    except Exception as err:
        raise _corrupt(path, "zarr", err) from err
    if adata.X is None:
        raise UserError(f"{path} has no X matrix (only layers/metadata): store the expression values in X.")
    return adata
