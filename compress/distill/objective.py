"""The distillation loss of a training step: the student against its teacher (and labels).

Built once per fine-tune: taps are resolved on both models (a wrong path is a one-line
error listing the module paths), both models run on a probe batch so that a tap emitting
the wrong thing is a one-line error naming both shapes, and a hint whose student and
teacher shapes differ gets a learned adapter (adapters.py), trained with the student.
Terms with weight 0 cost nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.distill.adapters import describe, hint_adapter
from compress.distill.attention_maps import check_maps, check_pair, resolve_map
from compress.distill.config import LOGITS, DistillConfig
from compress.distill.losses import (
    attention_map_kl,
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
            (
                kind,
                _resolve(student, s, "student", kind),
                _resolve(teacher.model, t, "teacher", kind),
            )
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
        models = {"student": student, "teacher": self.teacher.model}
        for kind, s, t in self.pairs:
            for role, path, found in (("student", s, s_feats), ("teacher", t, t_feats)):
                _check_output(kind, models[role], role, path, found)
            if kind == "attention_map":
                check_pair(f"{s} -> {t}", s_feats[s], t_feats[t])
            if kind == "hint":
                adapter = hint_adapter(
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
        if kind == "attention_map":
            return c.attention_map_weight * attention_map_kl(student, target)
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


def _resolve(model: nn.Module, pattern: str, role: str, kind: str) -> str:
    """The module path a tap records; a map tap may name the attention module of the map."""
    path = resolve(model, pattern, role)
    return resolve_map(model, path) if kind == "attention_map" else path


def _check_output(
    kind: str, model: nn.Module, role: str, path: str, found: dict[str, object]
) -> None:
    """Refuse a tap that recorded nothing, or not what its loss takes, in one line."""
    if path not in found:
        raise ConfigError(
            f"distill: {role} tap '{path}' records nothing: the module is not called by the "
            "forward of the model being trained (e.g. QAT runs fused modules instead); "
            "choose another tap or response KD"
        )
    if kind == "attention_map":
        check_maps(model, role, path, found[path])
    elif not isinstance(found[path], torch.Tensor):
        module = type(model.get_submodule(path)).__name__
        raise ConfigError(
            f"distill: {role} tap '{path}' ({module}) emits {describe(found[path])}, not a "
            "tensor; tap a module that returns one tensor"
        )


def _key(student: str, teacher: str) -> str:
    return f"{student}->{teacher}".replace(".", "_")


@torch.no_grad()
def _probe(
    model: nn.Module, taps: list[str], x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with eval_mode(model), recording(model, taps) as features:
        logits = model(x)
    return logits, dict(features)
