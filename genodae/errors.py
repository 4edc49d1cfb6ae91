"""Errors that are the user's to fix: the CLI prints their one-line message and exits with code 2."""


class UserError(ValueError):
    """A problem with the user's input or options; the message names it and says what to do.

    A :class:`ValueError`, so library users catch it as they catch scanpy's errors (``except ValueError``).
    """

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(str(message).split("\n")))


class StorageFull(UserError):
    """The disk refused a write (full, quota, file-size limit). HDF5 may be left unable to close the file, and
    h5py can then crash while freeing its objects at exit; the CLI therefore ends the process at once after the
    message (the unfinished output is already removed)."""
