"""Hydra's own refusals in our style: `compress: error: ...` on one line, exit code 2.

Hydra reports a config it cannot compose (an unknown group option, a misspelled key, an
override it cannot parse) itself, on several lines, and exits 1 (`run_and_report`). Set
to 1, HYDRA_FULL_ERROR makes it raise the exception instead, to its caller: `hydra_entry`
sets it around the Hydra app and turns those exceptions into one line naming the valid
choices. Everything else Hydra does (`--help`, `--cfg`, `-m`, `--config-dir`, shell
completion) is untouched; a user who set HYDRA_FULL_ERROR=1 gets Hydra's tracebacks.

An OSError before the job starts is Hydra failing to create the run folder under
`paths.outputs` (unwritable, or a file in the way): one line too. An exception of the job
itself (a bug) keeps its traceback and exit code 1.
"""

from __future__ import annotations

import difflib
import os
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from compress.cli.exits import usage_error
from compress.cli.processes import environment, job_processes
from compress.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

FULL_ERROR = "HYDRA_FULL_ERROR"

_started = False


def job_started() -> None:
    """Called first thing by the task function: later OSErrors are the job's own."""
    global _started
    _started = True


def hydra_entry(command: str, app: Callable[[], Any]) -> Any:
    """Run the `@hydra.main` function `app` as the console script `command` (in the
    processes `job_processes` sets up: all of a data-parallel job's, connected)."""
    with job_processes():
        return _refusing(command, app)


def _refusing(command: str, app: Callable[[], Any]) -> Any:
    global _started
    if os.environ.get(FULL_ERROR) == "1":
        return app()
    _started = False
    with environment(FULL_ERROR, "1"):  # Hydra raises its errors to us (read as one reaches it)
        try:
            return app()
        except Exception as error:
            message = refusal(error, _started)
            if message is None:
                raise
            usage_error(command, message)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as plain values; an interpolation that fails is a ConfigError (in a
    sweep, that job fails alone)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        where = getattr(error, "full_key", None)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{where}: {message}" if where else message) from None


def overrides() -> str:
    """The job's command-line overrides as typed: `${...}` in them is left unresolved (Hydra
    would resolve it against its own config, where `${paths.outputs}` does not exist)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    typed = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
    return " ".join(str(o) for o in typed)[:5000]  # type: ignore[union-attr]


def refusal(error: Exception, started: bool) -> str | None:
    """The one line for a usage or config error Hydra raised (None: not one of those);
    `started`: whether a job had begun (its own errors are its own)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, HydraException):  # composing (in a sweep, maybe a later job's)
        return describe(error)
    if started:
        return None
    if isinstance(error, OmegaConfBaseException):  # resolving Hydra's own run folder, say
        where = getattr(error, "full_key", None)
        return f"{str(error).splitlines()[0]}" + (f" (at {where})" if where else "")
    if isinstance(error, OSError) and error.filename:  # not a closed pipe, say
        why = error.strerror or str(error)
        return f"cannot create {error.filename}: {why} (paths.outputs must be writable)"
    if isinstance(error, ValueError) and _raised_in(error, "_run_hydra"):
        return str(error)  # Hydra's checks of its own flags (--resolve without --cfg, ...)
    return None


def describe(error: Exception) -> str:
    """Hydra's message on one line, with the valid choices it knows of."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, name = error.missing_cfg_file.rpartition("/")
        options = list(error.options)
        return (
            f"Could not find '{error.missing_cfg_file}'{_did_you_mean(name, options)}; "
            f"valid options in '{group}': {', '.join(options)}"
        )
    if isinstance(error, OverrideParseException):
        return f"cannot parse override '{error.override}': {collapse(error.message)}"
    lines = str(error).splitlines() or [type(error).__name__]
    parts = [lines[0].strip().rstrip(".")]
    missing = _missing_key(error.__cause__)
    if missing:
        parts.append(missing)
    elif error.__cause__ is not None and str(error.__cause__):
        parts.append(str(error.__cause__).splitlines()[0])
    hints = collapse("\n".join(lines[1:]))
    if hints:
        parts.append(hints[:1].lower() + hints[1:])
    return "; ".join(parts)


def collapse(text: str) -> str:
    """Lines joined into one: a `Header:` line and its indented items become `Header: a, b`."""
    parts: list[str] = []
    listing = False
    for line in text.splitlines():
        item = line.strip()
        if not item:
            continue
        if listing and line[:1] in ("\t", " "):
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + item
            continue
        listing = item.endswith(":")
        parts.append(item.rstrip("."))
    return "; ".join(parts)


def _missing_key(cause: BaseException | None) -> str | None:
    """`no key 'amout' in 'method' (valid: ...)` for OmegaConf's key-not-in-struct error."""
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if not isinstance(cause, ConfigAttributeError | ConfigKeyError):
        return None
    parent = getattr(cause, "parent_node", None)
    key, full_key = getattr(cause, "key", None), str(getattr(cause, "full_key", "") or "")
    if not isinstance(parent, DictConfig) or key is None:
        return None
    valid = [str(k) for k in parent]
    where = full_key.rpartition(".")[0]
    place = f"in '{where}'" if where else "at the top level"
    return f"no key '{key}' {place}{_did_you_mean(str(key), valid)} (valid: {', '.join(valid)})"


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _raised_in(error: BaseException, function: str) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].name == function
