"""Exceptions for user mistakes: the CLI prints their message and exits non-zero, without a traceback."""


class Seq2SeqError(Exception):
    """Base class of every error caused by input the user can fix (config, data, checkpoint, arguments)."""


class ConfigError(Seq2SeqError, ValueError):
    """A config key is unknown, has the wrong type, or the values cannot work together."""


class DataError(Seq2SeqError):
    """A corpus file is missing, malformed, misaligned or empty."""


class CheckpointError(Seq2SeqError):
    """A checkpoint file is missing, truncated, corrupt or of an unknown format."""


class StorageError(Seq2SeqError):
    """A file could not be written: no space left, permission denied, a read-only file system."""
