"""File-system helpers shared by genodae.io (its writers) and train.py (no third-party imports)."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(path: str | os.PathLike) -> None:
    """Give a finished file (or folder tree) the permissions a plain ``open()`` would have.

    Writers such as safetensors create files as 0600; on a shared cluster the group must read models.
    """
    mask = _umask()
    path = Path(path)
    todo = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in todo:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
