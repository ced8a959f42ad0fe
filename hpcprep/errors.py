"""Exception types. Every error hpcprep raises on purpose derives from HpcprepError."""


class HpcprepError(Exception):
    """Base class: a failure with a message meant for the user (no traceback needed)."""


class ConfigError(HpcprepError):
    """A bad configuration key or value, found on rank 0 before any work."""


class DataError(HpcprepError):
    """Bad input data: the message names the file, row and column."""


class OutputError(HpcprepError):
    """The output location cannot be used (exists, not writable, incomplete)."""
