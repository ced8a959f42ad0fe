"""Exception types. Every error hpcprep raises on purpose derives from HpcprepError."""


class HpcprepError(Exception):
    """Base class: a failure with a message meant for the user (no traceback needed)."""


class ConfigError(HpcprepError):
    """A bad configuration key or value, found on rank 0 before any work."""


class DataError(HpcprepError):
    """Bad input data: the message names the file, row and column."""


class FitError(DataError):
    """A fitted statistic is unusable (not finite, nothing passes a filter).

    Decided from the state merged over a standardization layer, so every rank of
    that layer raises it alike; the layer marks it so it is printed once.
    """


class OutputError(HpcprepError):
    """The output location cannot be used (exists, not writable, incomplete)."""
