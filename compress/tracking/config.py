"""Where the MLflow run goes."""

from __future__ import annotations

from dataclasses import dataclass

from compress.config import require


@dataclass(frozen=True)
class TrackingConfig:
    """Where the MLflow run goes; `uri` must be absolute so every job of a sweep shares it."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "compress"
    run_name: str | None = None
    artifact_location: str | None = None
    #: Skip a job whose exact config already FINISHED in this experiment, so that a
    #: re-launched sweep runs only what is missing, failed or was killed. auto: in sweeps
    #: (a multirun's jobs), not for a single run, which a user re-runs on purpose.
    resume: bool | str = "auto"
    #: The compressed model also as an MLflow model (`compress.tracking.model`), beside the
    #: artifact; false saves its second or so per job.
    log_model: bool = True

    def __post_init__(self) -> None:
        require(
            not self.enabled or bool(self.uri),
            "tracking.uri must be set when tracking is enabled",
        )
        require(bool(self.experiment), "tracking.experiment must not be empty")
        require(
            isinstance(self.resume, bool) or self.resume == "auto",
            f"tracking.resume must be auto, true or false, got {self.resume}",
        )

    def resumes(self, in_sweep: bool) -> bool:
        """Whether a job whose exact config already finished is skipped."""
        return self.enabled and (self.resume is True or (self.resume == "auto" and in_sweep))
