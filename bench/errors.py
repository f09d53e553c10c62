"""Errors that reach the user as one line and a non-zero exit code."""


class EcbenchError(Exception):
    """Base of every error the CLI reports without a traceback."""


class DataError(EcbenchError):
    """A dataset is missing, malformed or inconsistent."""


class ConfigError(EcbenchError):
    """An option or a combination of options that cannot work."""


class TrainingDiverged(EcbenchError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RecordError(EcbenchError):
    """A run record, manifest or model file that cannot be read safely."""


class OverTimeLimit(EcbenchError):
    """A run whose planned training exceeds the time it was given (`--max-hours`): nothing
    was trained; a faster machine can take it."""

    exit_code = 3  # apart from a failure, so that a sweep reports the run as skipped
