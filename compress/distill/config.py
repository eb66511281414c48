"""The `distill` config section: which losses a student learns from its teacher, and how much.

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T)
         + hint_weight * sum MSE(adapter(student tap), teacher tap)        (FitNets)
         + attention_weight * sum AT(student tap, teacher tap)             (Zagoruyko 2017)
         + attention_map_weight * sum KL(teacher map || student map)      (MiniLM, TinyBERT)
         + rkd_distance_weight * RKD-D + rkd_angle_weight * RKD-A          (Park 2019)

Taps are module paths (globs, `?` for a dot on the command line), student path -> teacher
path; `logits` names a model's output. An `attention_maps` tap may name an attention
module (`blocks.3.attn`, read through its `AttentionMap` child) or the map itself. The
teacher is the experiment's baseline unless `teacher` gives another model config (trained
and cached like a baseline) or `teacher_artifact` a saved artifact (e.g. the model.pt of an
earlier run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compress.config import from_mapping, require

ADAPTERS = ("auto", "none")
LOGITS = "logits"


def _taps(values: Mapping[Any, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (values or {}).items()}


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 4.0
    alpha: float = 0.9
    hint_weight: float = 0.0
    hints: dict[str | int, str | int] | None = None
    adapter: str = "auto"
    attention_weight: float = 0.0
    attention: dict[str | int, str | int] | None = None
    attention_map_weight: float = 0.0
    attention_maps: dict[str | int, str | int] | None = None
    rkd_distance_weight: float = 0.0
    rkd_angle_weight: float = 0.0
    rkd_taps: dict[str | int, str | int] | None = None
    teacher: dict[str, Any] | None = None
    teacher_artifact: str | None = None
    cache_teacher: bool = True

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.temperature) and self.temperature > 0,
            f"distill.temperature must be > 0, got {self.temperature}",
        )
        require(0 <= self.alpha <= 1, f"distill.alpha must be in [0, 1], got {self.alpha}")
        for name in (
            "hint_weight",
            "attention_weight",
            "attention_map_weight",
            "rkd_distance_weight",
            "rkd_angle_weight",
        ):
            value = getattr(self, name)
            require(value >= 0, f"distill.{name} must be >= 0, got {value}")
        require(
            self.adapter in ADAPTERS,
            f"distill.adapter '{self.adapter}' unknown; choose one of: {', '.join(ADAPTERS)}",
        )
        for name in ("hints", "attention", "attention_maps", "rkd_taps"):
            object.__setattr__(self, name, _taps(getattr(self, name)))
        require(
            not (self.hint_weight > 0 and not self.hints),
            "distill.hint_weight > 0 needs distill.hints: student tap -> teacher tap",
        )
        require(
            not (self.attention_weight > 0 and not self.attention),
            "distill.attention_weight > 0 needs distill.attention: student tap -> teacher tap",
        )
        require(
            not (self.attention_map_weight > 0 and not self.attention_maps),
            "distill.attention_map_weight > 0 needs distill.attention_maps: student attention "
            "module -> teacher attention module",
        )
        require(
            self.teacher is None or self.teacher_artifact is None,
            "give distill.teacher (a model to train) or distill.teacher_artifact, not both",
        )
        if self.rkd_distance_weight > 0 or self.rkd_angle_weight > 0:
            object.__setattr__(self, "rkd_taps", self.rkd_taps or {LOGITS: LOGITS})

    @classmethod
    def parse(cls, section: Mapping[str, Any] | None) -> DistillConfig | None:
        """The typed section, or None for `distill=none`."""
        values = dict(section or {"name": "none"})
        name = values.pop("name", None)
        require(
            name in ("none", "distill"), f"unknown distill '{name}'; choose one of: none, distill"
        )
        return from_mapping(cls, values, "distill") if name == "distill" else None

    def taps(self) -> list[tuple[str, str, str]]:
        """(kind, student tap, teacher tap) for every feature loss in use."""
        found = []
        for kind, weight, pairs in (
            ("hint", self.hint_weight, self.hints),
            ("attention", self.attention_weight, self.attention),
            ("attention_map", self.attention_map_weight, self.attention_maps),
            ("rkd", self.rkd_distance_weight + self.rkd_angle_weight, self.rkd_taps),
        ):
            if weight > 0:
                found += [(kind, s, t) for s, t in (pairs or {}).items()]
        return found
