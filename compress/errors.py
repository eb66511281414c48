"""Errors that reach the user as one line: bad input, missing data, a diverged run."""


class CompressError(Exception):
    """Base for every error the command line reports as a single line, without a traceback."""


class ConfigError(CompressError):
    """A config value that cannot work: unknown name, out-of-range number, mismatched shapes."""


class DatasetMissingError(CompressError):
    """Dataset files are absent and cannot be downloaded; the message names folder and files."""


class JobFailedError(CompressError):
    """A job that started for good reasons and failed while it ran (exit code 1, not 2)."""


class TrainingDivergedError(JobFailedError):
    """The loss became NaN or infinite; training stops rather than produce a broken model."""


class AlreadyFinished(Exception):
    """Resuming: a run with this exact config already FINISHED; nothing was run again."""

    def __init__(self, run_id: str, metrics: dict[str, float]) -> None:
        super().__init__(f"an identical config already finished as run {run_id}")
        self.run_id = run_id
        self.metrics = metrics


class Terminated(JobFailedError):
    """The process was told to stop (SIGTERM: torchrun after another process died, SLURM at
    the end of the job's time); its run ends KILLED."""
