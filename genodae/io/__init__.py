"""Read any supported expression matrix into AnnData; write outputs atomically.

:func:`read` returns cells/samples × genes (``obs × var``) whatever the file's layout. It reads
``.h5ad``, ``.loom``, 10x directories (``matrix.mtx[.gz]`` + ``features``/``genes.tsv[.gz]`` +
``barcodes.tsv[.gz]``) and 10x ``.h5``, CSV/TSV tables (optionally gzipped, either orientation),
GCT (#1.2, #1.3) and GSEA expression ``.txt`` files with their ``.cls`` phenotypes. Every problem
with the input becomes a one-line :class:`~genodae.errors.UserError` that names the file and says
what to do. Input files are only ever opened for reading.

:func:`write_h5ad`, :func:`write_table` and :func:`atomic_path` write to a temporary name in the
target folder and rename it into place on success, so an interrupted job (or a Snakemake rule that
fails half-way) never leaves a truncated output that looks finished.

The package is organised by responsibility (as anndata's ``_io``); each module imports only those above it
in this list:

- ``_common``: supported formats, table extensions, gzip errors, file-name extensions, examples in messages;
- ``_text``: opening (gzipped) text files, their first lines and separator, ``read_csv`` with clear errors;
- ``_orientation``: genes × samples or samples × genes, decided from the identifiers;
- ``_clean``: values as numbers and float32, NaN/inf handling, duplicate names;
- ``_table``, ``_gct``, ``_hdf5``, ``_mtx``, ``_cls``: one reader per format family (CSV/TSV/GSEA txt; GCT;
  h5ad, loom and 10x .h5; 10x mtx folders; GSEA .cls);
- ``_sheets``: sample sheets, read and joined into ``obs``;
- ``_read``: format detection and :func:`read_file` (one file);
- ``_multi``: several files, :func:`read_many` and :func:`read_batches_sheet`;
- ``_dispatch``: :func:`read`, one path or several;
- ``_write``: :func:`atomic_path`, :func:`write_h5ad`, :func:`write_table`.
"""

# Also importable from genodae.io, as before the split, though not in __all__ (noqa: F401): read_backed,
# the option values, and the batches-sheet parser the CLI uses.
from ._cls import read_cls
from ._common import SUPPORTED_FORMATS  # noqa: F401
from ._dispatch import read
from ._hdf5 import backed_layer, read_backed, read_sharing  # noqa: F401
from ._multi import _parse_batches_sheet, read_batches_sheet, read_many  # noqa: F401
from ._orientation import OrientationWarning  # noqa: F401
from ._read import DUPLICATES, MISSING, ORIENTATIONS, Orientation, read_file  # noqa: F401
from ._write import atomic_path, write_h5ad, write_table

__all__ = ["atomic_path", "read", "read_batches_sheet", "read_cls", "read_many", "write_h5ad", "write_table"]
