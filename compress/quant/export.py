"""The float model captured by torch.export for PT2E, or one line saying what stops it."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import sys
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from compress.errors import ConfigError


def export(model: nn.Module, example: torch.Tensor, method: str) -> torch.fx.GraphModule:
    """`model` captured by torch.export with a free batch dimension, or a one-line error
    naming the module whose forward cannot be traced."""
    batch = torch.export.Dim("batch")
    with _exporter_quiet():  # also while the failure is read: torch words it lazily
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        except Exception as error:  # every exporter failure means: no graph to quantize
            reason = f"{_culprit(model, error)} ({_first_line(error)})"
            raise ConfigError(
                f"method '{method}': torch.export cannot trace {reason}; static int8 and QAT "
                f"need a traceable forward (no data-dependent control flow): use "
                f"method=quantize_dynamic or method=quantize_weight_only, which need no graph"
            ) from error
    return program.module()


#: Loggers through which a failing torch.export words its guesses; the failure is
#: reported as our one line instead.
_EXPORT_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch.export")


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """Those loggers at ERROR, and stderr held back: a failing export prints its partial
    graph there (with `print`). What a successful export wrote is passed on."""
    loggers = [logging.getLogger(name) for name in _EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    held = io.StringIO()
    failed = True
    try:
        with contextlib.redirect_stderr(held):
            yield
        failed = False
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if not failed:
            sys.stderr.write(held.getvalue())


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _culprit(model: nn.Module, error: BaseException) -> str:
    """The deepest module whose own forward holds a line the exporter reported."""
    text = "\n".join(str(e) for e in _chain(error))
    places = {(file, int(line)) for file, line in _FRAME.findall(text)}
    found = f"'{type(model).__name__}'"
    for path, module in model.named_modules():
        try:
            lines, start = inspect.getsourcelines(type(module).forward)
            file = inspect.getsourcefile(type(module).forward)
        except (OSError, TypeError):
            continue
        if any(f == file and start <= n < start + len(lines) for f, n in places):
            found = f"module '{path}' ({type(module).__name__})" if path else found
    return found


def _chain(error: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__
