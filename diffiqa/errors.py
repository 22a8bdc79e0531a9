"""Errors a user can act on. The CLI prints them as one line (no traceback)."""


class DiffiqaError(Exception):
    """Base class: the message names the file/row and the problem."""


class ImageError(DiffiqaError):
    """An image file that cannot be used (corrupt, truncated, empty, too small, unreadable...)."""


class LabelError(DiffiqaError):
    """A label file/row that cannot be used (missing or non-numeric MOS, duplicates...)."""


class ConfigError(DiffiqaError):
    """Bad params / options."""


class DeviceError(ConfigError):
    """A ``--device`` this machine does not have, or that is not a device name at all."""


class OutputError(DiffiqaError):
    """An output path that cannot be written: a folder, one of the inputs, read-only, full."""


class ProvenanceError(DiffiqaError):
    """An artifact was made with other inputs than the current ones."""


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be used: not a checkpoint, another kind, a config that
    does not type-check, a state_dict that does not fit its config or holds NaN/inf."""


class NumericError(DiffiqaError):
    """A model produced or was given NaN, inf or out-of-range numbers."""


class Terminated(BaseException):
    """SIGTERM (``kill``, a scheduler's time limit), raised in the main thread by
    ``raise_on_sigterm`` so that every ``finally`` and ``except BaseException`` cleanup runs:
    Python's default SIGTERM ends the process without them, leaving temporaries behind."""


def raise_on_sigterm() -> object:
    """Install the SIGTERM -> ``Terminated`` handler (main thread only); returns the previous
    handler, or None when not in the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)
