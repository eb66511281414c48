"""Errors that reach the user as one line: bad input, missing data, a diverged run."""


class CompressError(Exception):
    """Base for every error the command line reports as a single line, without a traceback."""


class ConfigError(CompressError):
    """A config value that cannot work: unknown name, out-of-range number, mismatched shapes."""


class DatasetMissingError(CompressError):
    """Dataset files are absent and cannot be downloaded; the message names folder and files."""


class TrainingDivergedError(CompressError):
    """The loss became NaN or infinite; training stops rather than produce a broken model."""
