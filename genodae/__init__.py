"""genodae: masking-noise denoising autoencoders for gene-expression embeddings and signatures."""

__version__ = "0.1.0"

import logging as _logging

from . import pp, tl  # noqa: E402
from .config import DAEConfig, PrepareConfig, make_config  # noqa: E402
from .errors import UserError  # noqa: E402
from .io import read  # noqa: E402
from .model import DAE  # noqa: E402

_logging.getLogger("genodae").addHandler(_logging.NullHandler())

__all__ = ["DAE", "DAEConfig", "PrepareConfig", "UserError", "make_config", "pp", "read", "tl", "__version__"]
