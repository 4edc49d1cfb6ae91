"""``genodae <step>``: one subcommand per step of the data flow; each Snakemake rule calls one.

This module holds the entry point (:func:`main`, the ``genodae`` console script and ``python -m genodae``), the
parser and the one place where errors become messages: a :class:`~genodae.errors.UserError` (or a GPU
out-of-memory error) prints one line and exits with code 2, with no traceback and no output file (every output
is written atomically, after all computation succeeded). Each command group lives in its own module and
registers its subcommands on the parser:

========================  ==============================================================
``_prepare``              example, prepare
``_model``                train, embed, map (torch)
``_export``               export, plot
``_run``                  run (torch)
``_signatures``           signatures, ensemble, score (torch), sweep-summary
``_enrich``               enrich
``_assoc``                associate, survival
========================  ==============================================================

Building the parser imports no torch, anndata or scanpy; a command imports what it needs when it runs, so the
commands that need no model (all but train, embed, map, run and score) never load torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import typing
import warnings

from .. import __version__
from ..errors import StorageFull, UserError
from . import _assoc, _enrich, _export, _model, _prepare, _run, _signatures
from ._common import check_outputs
from ._common import read as _read  # noqa: F401  (tests and bench/ read inputs as the commands do)
from ._common import settings as _settings  # noqa: F401  (tests check the settings precedence)

GROUPS = (_prepare, _model, _export, _run, _signatures, _enrich, _assoc)

__all__ = ["build_parser", "main"]


class Parser(argparse.ArgumentParser):
    """argparse's parser with usage errors on one line (exit code 2) and no abbreviated flags."""

    def __init__(self, *args, **kwargs) -> None:
        # no abbreviations: a retired flag (--loss) must not silently become another one (--loss-on)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="genodae", description="Masking-noise denoising autoencoders for gene expression.")
    parser.add_argument("--version", action="version", version=f"genodae {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    # -v/-q also after the subcommand; SUPPRESS keeps a subparser from resetting what came before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, parents=[common], **k)
    sub.required = True
    for group in GROUPS:
        group.register(sub)
    return parser


def _out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is torch's GPU out-of-memory error (by type; torch is not imported for it: a process that
    never loaded torch cannot have run out of GPU memory)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)  # = torch.OutOfMemoryError (>= 2.5)


class _Terminated(BaseException):
    """SIGTERM (a scheduler's time limit or scancel), raised so that unfinished outputs are removed on the way out."""


def _terminate(signum, frame):
    raise _Terminated


def _quiet_h5py_dealloc(previous):
    """An unraisable-exception hook for the command's run: after a failed HDF5 write (disk full) h5py reports every
    object it cannot free ("Exception ignored in ObjectID.__dealloc__"); the one-line error already says what
    happened, so those reports go to the debug log. Anything else goes to ``previous``."""
    def hook(unraisable) -> None:
        if "h5py" in repr(unraisable.object):
            logging.getLogger("genodae").debug("h5py could not free an object: %s", unraisable.exc_value)
            return
        previous(unraisable)

    return hook


_state = {"storage_full": False}


def run() -> None:
    """The ``genodae`` command (console script and ``python -m genodae``): :func:`main`, then exit with its code.
    After a disk that filled mid-write the process ends at once (``os._exit``), skipping the interpreter's cleanup,
    where h5py can crash (exit 139) freeing a file HDF5 could not close; the output is already removed."""
    _state["storage_full"] = False
    rc = main()
    if _state["storage_full"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="genodae: %(message)s", stream=sys.stderr)
    logging.getLogger("genodae").setLevel(level)
    on_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live only there
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    unraisable = sys.unraisablehook
    sys.unraisablehook = _quiet_h5py_dealloc(unraisable)
    try:
        with warnings.catch_warnings():  # restored afterwards: library callers in the same process still get them
            warnings.filterwarnings("ignore", category=UserWarning, module=r"genodae\b")  # logged as "genodae: …"
            check_outputs(args)
            args.func(args)
    except UserError as e:
        print(f"genodae {args.command}: error: {e}", file=sys.stderr)
        if isinstance(e, StorageFull):  # h5py may crash freeing a file HDF5 could not close: run() ends at once
            _state["storage_full"] = True
        return 2
    except Exception as e:
        if not _out_of_memory(e):  # torch's out-of-memory error outside training (embed, weights)
            raise
        print(f"genodae {args.command}: error: out of GPU memory ({str(e).splitlines()[0]}); use a smaller "
              "--batch-size, --data-placement host, or --device cpu", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genodae: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"genodae {args.command}: terminated (SIGTERM, e.g. a job's time limit); unfinished outputs removed",
              file=sys.stderr)
        return 143
    finally:
        sys.unraisablehook = unraisable
        if on_main_thread and previous is not None:  # None: a handler not set from Python, left as it was
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    run()
