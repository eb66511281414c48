"""The distillation loss of a training step: the student against its teacher (and labels).

Built once per fine-tune: taps are resolved on both models (a wrong path is a one-line
error listing the module paths), and a hint whose student and teacher shapes differ gets
a learned adapter (1x1 conv for feature maps, linear for vectors), trained with the
student. Terms with weight 0 cost nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.distill.config import LOGITS, DistillConfig
from compress.distill.losses import (
    attention_transfer,
    hint_mse,
    response_kd,
    rkd_angle,
    rkd_distance,
)
from compress.distill.taps import recording, resolve
from compress.distill.teacher import Teacher
from compress.errors import ConfigError
from compress.models.eval_mode import eval_mode, model_device


def _adapter(student: torch.Size, teacher: torch.Size, hint: str, allowed: str) -> nn.Module:
    """What maps a student feature of shape `student` onto the teacher's `teacher`."""
    if student == teacher:
        return nn.Identity()
    spatial_match = len(student) == len(teacher) == 4 and student[2:] == teacher[2:]
    if allowed == "auto" and spatial_match:
        return nn.Conv2d(student[1], teacher[1], kernel_size=1)
    if allowed == "auto" and len(student) == len(teacher) == 2:
        return nn.Linear(student[1], teacher[1])
    raise ConfigError(
        f"distill.hints {hint}: student output {tuple(student[1:])} cannot be mapped onto the "
        f"teacher's {tuple(teacher[1:])} (adapter '{allowed}': same shape, or same spatial "
        "size for a 1x1 conv, or vectors for a linear adapter)"
    )


class DistillObjective:
    def __init__(
        self,
        config: DistillConfig,
        teacher: Teacher,
        student: nn.Module,
        input_shape: tuple[int, ...],
        label_smoothing: float = 0.0,
    ) -> None:
        self.config = config
        self.teacher = teacher
        self.pairs = [
            (kind, resolve(student, s, "student"), resolve(teacher.model, t, "teacher"))
            for kind, s, t in config.taps()
        ]
        teacher.use_taps([t for _, _, t in self.pairs])
        self.cross_entropy = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.adapters = nn.ModuleDict()
        if self.pairs:
            self._probe(student, input_shape)

    def _probe(self, student: nn.Module, input_shape: tuple[int, ...]) -> None:
        """Run both models on a small batch: every tap must record an output, every hint
        gets its adapter, and every feature loss must accept the shapes it is given."""
        example = torch.zeros((3, *input_shape), device=model_device(student))
        s_logits, s_feats = _probe(student, [s for _, s, _ in self.pairs], example)
        t_logits, t_feats = self.teacher.run(example)
        s_feats, t_feats = {**s_feats, LOGITS: s_logits}, {**t_feats, LOGITS: t_logits}
        for kind, s, t in self.pairs:
            for role, path, found in (("student", s, s_feats), ("teacher", t, t_feats)):
                if path not in found:
                    raise ConfigError(
                        f"distill: {role} tap '{path}' records nothing: the module is not "
                        "called by the forward of the model being trained (e.g. QAT runs "
                        "fused modules instead); choose another tap or response KD"
                    )
            if kind == "hint":
                adapter = _adapter(
                    s_feats[s].shape, t_feats[t].shape, f"{s} -> {t}", self.config.adapter
                )
                self.adapters[_key(s, t)] = adapter.to(model_device(student))
            try:
                with torch.no_grad():
                    self._term(kind, s, t, s_feats[s], t_feats[t])
            except ValueError as error:
                raise ConfigError(f"distill {kind} {s} -> {t}: {error}") from error

    def _term(
        self, kind: str, s: str, t: str, student: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The weighted loss of one tap pair."""
        c = self.config
        if kind == "hint":
            return c.hint_weight * hint_mse(self.adapters[_key(s, t)](student), target)
        if kind == "attention":
            return c.attention_weight * attention_transfer(student, target)
        loss = torch.zeros((), device=student.device)
        if c.rkd_distance_weight > 0:
            loss = loss + c.rkd_distance_weight * rkd_distance(student, target)
        if c.rkd_angle_weight > 0:
            loss = loss + c.rkd_angle_weight * rkd_angle(student, target)
        return loss

    def parameters(self) -> list[nn.Parameter]:
        return list(self.adapters.parameters())

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        with recording(model, [s for _, s, _ in self.pairs]) as s_feats:
            logits = model(x)
        t_logits, t_feats = self.teacher.outputs(x, idx)
        s_feats = {**s_feats, LOGITS: logits}
        t_feats = {**t_feats, LOGITS: t_logits}
        loss = (1 - c.alpha) * self.cross_entropy(logits, y) if c.alpha < 1 else 0.0
        if c.alpha > 0:
            loss = loss + c.alpha * response_kd(logits, t_logits, c.temperature)
        for kind, s, t in self.pairs:
            loss = loss + self._term(kind, s, t, s_feats[s], t_feats[t])
        return torch.as_tensor(loss, device=logits.device), logits


def _key(student: str, teacher: str) -> str:
    return f"{student}->{teacher}".replace(".", "_")


@torch.no_grad()
def _probe(
    model: nn.Module, taps: list[str], x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with eval_mode(model), recording(model, taps) as features:
        logits = model(x)
    return logits, dict(features)
