"""genodae: masking-noise denoising autoencoders for gene-expression embeddings and signatures.

``genodae.nn`` and ``genodae.train`` need only torch, numpy and scipy; everything AnnData-aware
(``pp``, ``tl``, ``pl``, ``read``, ``DAE``) is imported on first use, so the pure-torch parts run where
anndata/scanpy are not installed (e.g. a bare GPU node).
"""

import importlib as _importlib
import logging as _logging

__version__ = "0.1.0"

from .config import DAEConfig, PrepareConfig, make_config  # noqa: E402
from .errors import UserError  # noqa: E402

_logging.getLogger("genodae").addHandler(_logging.NullHandler())

_LAZY = {
    "pp": (".pp", None),
    "tl": (".tl", None),
    "pl": (".pl", None),
    "io": (".io", None),
    "datasets": (".datasets", None),
    "get": (".get", None),
    "signatures": (".signatures", None),
    "enrich": (".enrich", None),
    "assoc": (".assoc", None),
    "synthetic": (".synthetic", None),
    "read": (".io", "read"),
    "read_many": (".io", "read_many"),
    "read_batches_sheet": (".io", "read_batches_sheet"),
    "DAE": (".model", "DAE"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = _importlib.import_module(module, __name__)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'genodae' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["DAE", "DAEConfig", "PrepareConfig", "UserError", "make_config", "pl", "pp", "read", "read_batches_sheet", "read_many", "tl", "__version__"]
