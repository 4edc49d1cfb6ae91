"""Matrix Market folders, recognised by their markers and read as cells × genes:

- 10x Genomics: ``matrix.mtx[.gz]`` + ``features``/``genes.tsv[.gz]`` + ``barcodes.tsv[.gz]`` (genes × cells;
  prefixed names such as GEO's ``GSM1_matrix.mtx.gz`` too), and Cell Ranger 1–2 ``*_gene_bc_matrices/<genome>/``;
- Cell Ranger ``outs/`` (``filtered_feature_bc_matrix/`` beside ``raw_…``) and ``cellranger multi``
  (``per_sample_outs/<sample>/count/sample_filtered_feature_bc_matrix/``);
- kb-python: ``counts_unfiltered/cells_x_genes.mtx`` (cells × genes) + ``.barcodes.txt`` + ``.genes.txt``
  (+ ``.genes.names.txt``), and its nac/lamanno matrices (``.mature``/``.nascent``/``.ambiguous``/``.total``);
- STARsolo: ``Solo.out/Gene/filtered/`` (``raw/`` beside it; ``GeneFull``, ``Velocyto``, ``SJ`` beside ``Gene``);
- alevin-fry / salmon alevin ``--dumpMtx``: ``quants_mat.mtx`` + ``quants_mat_rows.txt`` (cells) +
  ``quants_mat_cols.txt`` (genes), in ``af_quant/alevin/``.

A folder is resolved to one matrix when the choice is unambiguous (filtered over raw, a total over its parts),
and what was read and set aside is logged and recorded; otherwise the error names the real paths to give.
Nothing is read half: several matrices, samples or genomes are read together with a column saying which, or
refused with their names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import UserError
from ._common import _GZIP_ERRORS
from ._hdf5 import _join_genomes, _keep_gene_expression, _read_10x_h5
from ._text import _gzip_error, _read_csv

logger = logging.getLogger("genodae")

_FILTERED = ("filtered_feature_bc_matrix", "sample_filtered_feature_bc_matrix", "filtered_gene_bc_matrices",
             "counts_filtered", "filtered")
_RAW = ("raw_feature_bc_matrix", "sample_raw_feature_bc_matrix", "raw_gene_bc_matrices", "counts_unfiltered", "raw")
_SOLO_COUNTS = ("Gene", "GeneFull", "GeneFull_Ex50pAS", "GeneFull_ExonOverIntron")
_PLAIN = ("matrix.mtx", "cells_x_genes.mtx", "quants_mat.mtx", "cells_x_genes.total.mtx")
_GENOME_HOW = "--genome NAME (genome= in Python), or give that genome's folder"


def _is_mtx(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith((".mtx", ".mtx.gz"))


def _stem(p: Path) -> str:
    name = p.name
    return name[: -len(".mtx.gz")] if name.lower().endswith(".gz") else name[: -len(".mtx")]


def _read_mtx_source(path: Path, genome: str | None = None) -> anndata.AnnData:
    """Read a matrix folder (any layout above) or one ``.mtx[.gz]`` file with its name files."""
    notes: dict = {}
    if path.is_dir():
        found = _resolve_folder(path, notes, 0)
    else:
        found = ("mtx", path)
    kind, target = found
    if kind == "h5":
        adata = _read_10x_h5(target, genome)
        notes.update(adata.uns.pop("_genodae_notes", {}))
        adata.uns["_genodae_format"] = "10x_h5"
    elif kind == "genomes":
        parts = target
        if genome is not None:
            names = [g for g, _ in parts]
            if genome not in names:
                raise UserError(f"genome={genome!r} is not in {path}: it holds {', '.join(names)}; give one of "
                                "them (--genome).")
            parts = [(g, f) for g, f in parts if g == genome]
            notes["genome"] = genome
        parts = [(g, _read_mtx_file(_main_mtx(f), notes)) for g, f in parts]
        adata = _join_genomes(parts, path, notes, how=_GENOME_HOW)
    else:
        if genome is not None:
            raise UserError(f"genome={genome!r} given but {target} holds one genome's matrix (or does not record "
                            "genomes): leave out --genome.")
        adata = _read_mtx_file(target, notes)
    if kind != "h5" and "read" not in notes:
        notes["read"] = str(target if kind == "mtx" else path)
    adata.uns["_genodae_notes"] = notes
    return adata


# --- a folder: which matrix? -------------------------------------------------------------------------------


def _resolve_folder(folder: Path, notes: dict, depth: int) -> tuple[str, object]:
    if depth > 6:
        raise UserError(f"{folder}: matrix folders nested too deep; give the folder that holds the .mtx file.")
    mtx = sorted(p for p in folder.iterdir() if _is_mtx(p))
    if mtx:
        return "mtx", _choose_mtx(folder, mtx, notes)
    names = {p.name: p for p in folder.iterdir()}
    subs = {n: p for n, p in names.items() if p.is_dir()}

    if "quants_mat.gz" in names and "quants_mat_cols.txt" in names:
        raise UserError(
            f"{folder} holds salmon alevin's binary quants_mat.gz, which genodae cannot read: re-run salmon alevin "
            "with --dumpMtx (it writes quants_mat.mtx.gz beside it) and give this folder again."
        )

    def descend(sub: str, layout: str | None = None) -> tuple[str, object]:
        if layout:
            notes.setdefault("layout", layout)
        return _resolve_folder(subs[sub], notes, depth + 1)

    for sub, layout in (("outs", "Cell Ranger outs/"), ("Solo.out", "STARsolo"), ("af_quant", "alevin-fry"),
                        ("alevin", None)):
        if sub in subs:
            return descend(sub, layout)

    if "per_sample_outs" in subs:
        samples = sorted(p for p in subs["per_sample_outs"].iterdir() if p.is_dir())
        notes.setdefault("layout", "cellranger multi")
        if len(samples) == 1:
            logger.info("%s: cellranger multi output of one sample, %s", folder, samples[0].name)
            return _resolve_folder(samples[0], notes, depth + 1)
        if len(samples) > 1:
            paths = [s / "count" / "sample_filtered_feature_bc_matrix" for s in samples]
            raise UserError(
                f"{folder} is a cellranger multi output of {len(samples)} samples ({', '.join(s.name for s in samples)}):"
                f" give them as several inputs to read them as batches, or one of them: {_show(paths)}."
            )
    if "count" in subs and any((subs["count"] / n).exists() for n in (*_FILTERED, *_RAW)):
        return descend("count")

    solo = [n for n in _SOLO_COUNTS if n in subs]
    if solo or "Velocyto" in subs:
        notes.setdefault("layout", "STARsolo")
        aside = [n for n in ("Velocyto", "SJ") if n in subs]
        if len(solo) > 1:
            paths = [subs[n] / "filtered" if (subs[n] / "filtered").is_dir() else subs[n] for n in solo]
            raise UserError(
                f"{folder} holds STARsolo counts of {len(solo)} kinds ({', '.join(solo)}): give the one to read: "
                f"{_show(paths)}."
            )
        if solo:
            if aside:
                logger.info("%s: reading the STARsolo %s counts; %s not read (give its folder to read it)",
                            folder, solo[0], " and ".join(aside))
                notes["not_read"] = [str(subs[n]) for n in aside]
            return descend(solo[0])
        return descend("Velocyto")

    filtered = next((n for n in _FILTERED if n in subs), None)
    raw = next((n for n in _RAW if n in subs), None)
    h5 = {n: names[f"{n}.h5"] for n in (*_FILTERED, *_RAW) if f"{n}.h5" in names and names[f"{n}.h5"].is_file()}
    filtered_h5 = next((n for n in _FILTERED if n in h5), None)
    raw_h5 = next((n for n in _RAW if n in h5), None)
    if filtered or filtered_h5:
        others = [p for p in (subs.get(raw) if raw else None, h5.get(raw_h5) if raw_h5 else None) if p]
        target = subs[filtered] if filtered else h5[filtered_h5]
        logger.info("%s: reading the filtered matrix %s%s", folder, target.name,
                    f" ({_show(others)} not read: give it to read all barcodes)" if others else "")
        if others:
            notes["not_read"] = [str(p) for p in others]
        if filtered:
            if filtered == "counts_filtered":
                notes.setdefault("layout", "kb-python")
            return descend(filtered)
        notes["read"] = str(target)
        return "h5", target
    if raw or raw_h5:
        target = subs[raw] if raw else h5[raw_h5]
        if raw == "counts_unfiltered":  # kb-python's usual output: it filters nothing unless asked (--filter)
            notes.setdefault("layout", "kb-python")
        else:
            logger.warning("%s holds only the unfiltered matrix %s (every barcode, empty droplets included): "
                           "reading it; filter cells before training", folder, target.name)
        if raw:
            return descend(raw)
        notes["read"] = str(target)
        return "h5", target

    tenx = sorted(p for p in subs.values() if any(_is_mtx(q) for q in p.iterdir()))
    if tenx and folder.name.endswith("gene_bc_matrices"):  # Cell Ranger 1-2: one folder per genome
        notes.setdefault("layout", "Cell Ranger 1-2")
        return "genomes", [(p.name, p) for p in tenx]
    if len(tenx) == 1:
        logger.info("%s: reading the matrix folder %s inside it", folder, tenx[0].name)
        return _resolve_folder(tenx[0], notes, depth + 1)
    if len(tenx) > 1:
        raise UserError(
            f"{folder} holds {len(tenx)} matrix folders: give them as several inputs to read them as batches, or "
            f"one of them: {_show(tenx)}."
        )
    if any(n.startswith(k) for n in names for k in ("barcodes.tsv", "features.tsv", "genes.tsv")):
        raise UserError(
            f"{folder} is a directory but not a 10x matrix directory: missing matrix.mtx(.gz). A 10x directory "
            "needs matrix.mtx(.gz), features.tsv(.gz) or genes.tsv(.gz), and barcodes.tsv(.gz)."
        )
    shown = ", ".join(sorted(n + ("/" if p.is_dir() else "") for n, p in names.items())[:8]) or "nothing"
    raise UserError(
        f"{folder} is a folder but not a matrix folder genodae knows (it holds {shown}): give a 10x folder "
        "(matrix.mtx[.gz], features.tsv[.gz] or genes.tsv[.gz], barcodes.tsv[.gz]), a Cell Ranger outs/, kb-python, "
        "STARsolo or alevin-fry output folder, or a file."
    )


def _main_mtx(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if _is_mtx(p))
    if not found:
        return folder / "matrix.mtx"  # missing: _read_mtx_file says what a 10x folder needs
    return _choose_mtx(folder, found, {})


def _choose_mtx(folder: Path, files: list[Path], notes: dict) -> Path:
    """One .mtx of a folder: the only one, a total, or the plain one beside alternatives; else an error."""
    if len(files) == 1:
        return files[0]
    stems = {_stem(p).lower(): p for p in files}
    samples = [p for p in files if _stem(p).lower().endswith("matrix") and _stem(p).lower() != "matrix"]
    if len(samples) == len(files):
        raise UserError(
            f"{folder} holds the matrices of {len(files)} samples ({_show(files, names=True)}): give them as "
            f"several inputs to read them as batches, or one of them (e.g. {files[0]})."
        )
    for plain in _PLAIN:
        if plain[:-4] in stems:
            chosen = stems[plain[:-4]]
            others = [p for p in files if p != chosen]
            logger.warning("%s: reading %s; %s not read (give one's path to read it instead)", folder, chosen.name,
                           _show(others, names=True))
            notes["not_read"] = [str(p) for p in others]
            return chosen
    kinds = ", ".join(_stem(p).split(".")[-1] for p in files)
    kb = any(_stem(p).lower().startswith("cells_x_genes") for p in files)
    raise UserError(
        f"{folder} holds {len(files)} count matrices ({kinds}) and no total: genodae reads one matrix, so give "
        f"the one to read (e.g. {files[0]})" + (", or re-run kb count with --sum total to get "
                                                "cells_x_genes.total.mtx" if kb else "") + "."
    )


def _show(paths, names: bool = False) -> str:
    paths = list(paths)
    shown = [p.name if names else str(p) for p in paths[:4]]
    return ", ".join(shown) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")


# --- one .mtx file with its names --------------------------------------------------------------------------


def _companions(matrix: Path) -> tuple[str, Path, Path, Path | None, str]:
    """(layout, genes file, barcodes file, gene-names file or None, stored orientation) of a matrix file."""
    folder = matrix.parent

    def first(*names: str) -> Path | None:
        return next((folder / n for n in names if (folder / n).is_file()), None)

    stem = _stem(matrix)
    if stem.lower() == "quants_mat":
        genes, bars = first("quants_mat_cols.txt"), first("quants_mat_rows.txt")
        if genes is None or bars is None:
            raise UserError(f"alevin folder {folder} is missing quants_mat_cols.txt or quants_mat_rows.txt: copy "
                            "the whole alevin/ folder.")
        return "alevin-fry", genes, bars, None, "cells_by_genes"
    for base in dict.fromkeys((stem, stem.split(".")[0])):
        genes, bars = first(f"{base}.genes.txt"), first(f"{base}.barcodes.txt")
        if genes and bars:
            return "kb-python", genes, bars, first(f"{base}.genes.names.txt"), "cells_by_genes"
    p = stem[: -len("matrix")] if stem.endswith("matrix") else ""
    features = first(f"{p}features.tsv.gz", f"{p}features.tsv", f"{p}genes.tsv.gz", f"{p}genes.tsv")
    barcodes = first(f"{p}barcodes.tsv.gz", f"{p}barcodes.tsv")
    if p and not (features and barcodes):  # prefixed matrix without prefixed names: the folder's own
        features = features or first("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
        barcodes = barcodes or first("barcodes.tsv.gz", "barcodes.tsv")
    if not stem.endswith("matrix"):
        features = features or first("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
        barcodes = barcodes or first("barcodes.tsv.gz", "barcodes.tsv")
    for what, found in (("features.tsv(.gz) or genes.tsv(.gz)", features), ("barcodes.tsv(.gz)", barcodes)):
        if found is None:
            if not stem.endswith("matrix"):
                raise UserError(
                    f"{matrix} has no gene and barcode names beside it: a 10x folder needs features.tsv(.gz) (or "
                    f"genes.tsv) and barcodes.tsv(.gz); kb-python's, {stem}.genes.txt and {stem}.barcodes.txt."
                )
            raise UserError(
                f"10x directory {folder} is missing {p}{what}: a 10x directory needs {p}matrix.mtx(.gz), "
                f"{p}features.tsv(.gz) or {p}genes.tsv(.gz), and {p}barcodes.tsv(.gz). Copy the missing file."
            )
    return "10x", features, barcodes, None, "genes_by_cells"  # type: ignore[return-value]


def _find_10x_files(path: Path) -> tuple[Path, Path, Path]:
    """(matrix, features, barcodes) of a 10x directory, or of the directory of a matrix.mtx file."""
    matrix = _main_mtx(path) if path.is_dir() else path
    _, features, barcodes, _, _ = _companions(matrix)  # type: ignore[arg-type]
    return matrix, features, barcodes  # type: ignore[return-value]


def _read_10x_mtx(path: Path) -> anndata.AnnData:
    """A 10x folder or matrix file (kept for callers of the former name)."""
    return _read_mtx_source(path)


def _read_mtx_file(matrix: Path, notes: dict) -> anndata.AnnData:
    if not matrix.is_file():
        raise UserError(
            f"{matrix.parent} is a directory but not a 10x matrix directory: missing matrix.mtx(.gz). A 10x "
            "directory needs matrix.mtx(.gz), features.tsv(.gz) or genes.tsv(.gz), and barcodes.tsv(.gz)."
        )
    layout, features_path, barcodes_path, names_path, stored = _companions(matrix)
    for p in (matrix, features_path, barcodes_path):
        if p.stat().st_size == 0:
            raise UserError(f"{p} is empty (0 bytes): re-copy the {layout} folder.")
    try:
        mat = anndata.io.read_mtx(matrix).X
    except _GZIP_ERRORS as err:
        raise _gzip_error(matrix, err) from err
    except Exception as err:
        raise UserError(
            f"{matrix} is not a valid Matrix Market file ({type(err).__name__}: {' '.join(str(err).split())[:200]}): "
            "it is corrupt or truncated; re-copy it."
        ) from err
    feats = _read_csv(features_path, sep="\t", header=None, dtype=str, keep_default_na=False)
    bars = _read_csv(barcodes_path, sep="\t", header=None, dtype=str, keep_default_na=False)
    n_genes, n_cells = len(feats), len(bars)
    if layout == "alevin-fry":
        _refuse_usa_mode(matrix, feats[0].tolist(), mat.shape)
    if mat.shape == (n_genes, n_cells) and (stored == "genes_by_cells" or n_genes != n_cells):
        X = sparse.csr_matrix(mat.T)
    elif mat.shape == (n_cells, n_genes):
        X = sparse.csr_matrix(mat)
    else:
        a, b = mat.shape
        raise UserError(
            f"{layout} folder {matrix.parent}: {matrix.name} is {a} × {b} but {features_path.name} has {n_genes} rows "
            f"and {barcodes_path.name} has {n_cells}: the files do not belong together or one is truncated."
        )
    if (mat.shape == (n_cells, n_genes)) != (stored == "cells_by_genes") and n_genes != n_cells:
        logger.info("%s is stored %s, not as %s usually writes it: read by its name files", matrix,
                    "cells × genes" if mat.shape == (n_cells, n_genes) else "genes × cells", layout)
    gene_ids = feats[0].to_numpy()
    symbols = feats[1].to_numpy() if feats.shape[1] > 1 else gene_ids
    if names_path is not None:
        gene_names = _read_csv(names_path, sep="\t", header=None, dtype=str, keep_default_na=False,
                               skip_blank_lines=False).fillna("")
        if len(gene_names) != n_genes:
            raise UserError(f"{names_path} has {len(gene_names)} names but {features_path.name} has {n_genes} genes: "
                            "the files do not belong together or one is truncated.")
        symbols = np.where(gene_names[0].to_numpy() == "", gene_ids, gene_names[0].to_numpy())
    var = pd.DataFrame({"gene_ids": gene_ids}, index=pd.Index(symbols.astype(str)))
    if feats.shape[1] > 2:
        var["feature_types"] = feats[2].to_numpy()
    adata = anndata.AnnData(X, obs=pd.DataFrame(index=pd.Index(bars[0].to_numpy().astype(str))), var=var)
    if layout != "10x":
        notes.setdefault("layout", layout)
    if "feature_types" in var and not var["feature_types"].isin(["Gene Expression", ""]).all():
        adata = _keep_gene_expression(adata, matrix, notes)
    return adata


def _refuse_usa_mode(matrix: Path, cols: list[str], shape: tuple[int, int]) -> None:
    """alevin-fry's USA mode stores spliced, unspliced and ambiguous counts side by side (3 × the genes)."""
    usa = False
    for meta in (matrix.parent / "quant.json", matrix.parent.parent / "quant.json",
                 matrix.parent / "meta_info.json", matrix.parent.parent / "meta_info.json"):
        if meta.is_file():
            try:
                usa = bool(json.loads(meta.read_text()).get("usa_mode", False))
            except (ValueError, OSError, AttributeError):
                pass
            break
    n = len(cols)
    if not usa and n % 3 == 0 and n:
        k = n // 3
        base, second = cols[:k], cols[k:2 * k]
        usa = second == base or all(s in (b + "-U", b + "-I") for b, s in zip(base, second, strict=True))
    if usa:
        raise UserError(
            f"{matrix} is alevin-fry USA-mode output: spliced, unspliced and ambiguous counts of every gene side by "
            "side, not one count per gene. Make one matrix first, e.g. in Python with pyroe: "
            "load_fry(folder, output_format='scRNA').write_h5ad('x.h5ad'), and give the .h5ad."
        )
