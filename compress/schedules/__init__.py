"""Schedules: one module per schedule, each a `ScheduleConfig` plugin owning its loop."""

from compress.schedules.base import (
    Finetune,
    ScheduleConfig,
    ScheduleContext,
    Tuning,
    parse_schedule,
)

__all__ = ["Finetune", "ScheduleConfig", "ScheduleContext", "Tuning", "parse_schedule"]
