"""losslab's error type: raised for bad user input; the CLI prints it as one line and exits non-zero."""


class LosslabError(ValueError):
    """Bad input or an unusable state, described in one line (shape, key mismatch, empty data, NaN loss...)."""
