"""Distillation losses: values on hand-made tensors, invariances, edge cases and gradients."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from compress.distill.losses import (
    attention_transfer,
    hint_mse,
    response_kd,
    rkd_angle,
    rkd_distance,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"
))]  # fmt: skip


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orthogonal(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A (rows, cols) matrix with orthonormal rows (rows <= cols): an isometry x -> x @ m."""
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=generator(seed)))
    return q.T.contiguous()


# ---------------------------------------------------------------- response-based KD


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_kd_zero_when_student_equals_teacher(temperature: float) -> None:
    logits = torch.randn(8, 10, generator=generator()) * 5
    assert response_kd(logits, logits.clone(), temperature).abs().item() < 1e-6


def test_kd_positive_and_monotone_along_a_line() -> None:
    teacher = torch.randn(4, 3, generator=generator())
    direction = torch.tensor([1.0, -1.0, 0.5])
    values = [
        response_kd(teacher + alpha * direction, teacher, 2.0).item()
        for alpha in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    ]
    assert abs(values[0]) < 1e-6
    assert all(b > a for a, b in itertools.pairwise(values))


def test_kd_matches_hand_computed_two_class_value() -> None:
    # T = 2: teacher row 0 -> (1/2, 1/2); student row 0 = (2 ln 3, 0) -> softmax(s/2) = (3/4, 1/4).
    # KL = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(4/3); row 1 agrees exactly (KL 0).
    student = torch.tensor([[2 * math.log(3.0), 0.0], [1.0, -1.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    expected = 0.5 * math.log(4.0 / 3.0) * 2.0**2 / 2  # x T², then batchmean over N = 2
    assert response_kd(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [2.0, 5.0, 20.0])
def test_kd_t_squared_factor(temperature: float) -> None:
    # Scaling the logits by T fixes softmax(z / T), so only the T² factor changes the value.
    student = torch.randn(5, 7, generator=generator(1))
    teacher = torch.randn(5, 7, generator=generator(2))
    base = response_kd(student, teacher, 1.0)
    scaled = response_kd(student * temperature, teacher * temperature, temperature)
    assert scaled.item() == pytest.approx(base.item() * temperature**2, rel=1e-5)


def test_kd_finite_for_huge_logits() -> None:
    student = torch.randn(6, 5, generator=generator(3)) * 1e3
    teacher = torch.randn(6, 5, generator=generator(4)) * 1e3
    for temperature in (1.0, 20.0):
        value = response_kd(student.requires_grad_(), teacher, temperature)
        value.backward()
        assert torch.isfinite(value) and value.item() > 0
        assert student.grad is not None and torch.isfinite(student.grad).all()
        student.grad = None


def test_kd_gradient_reaches_student_only() -> None:
    student = torch.randn(3, 4, generator=generator(5), requires_grad=True)
    teacher = torch.randn(3, 4, generator=generator(6), requires_grad=True)
    response_kd(student, teacher, 4.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_kd_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same shape"):
        response_kd(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        response_kd(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


# ---------------------------------------------------------------- FitNets hint


def test_hint_values_and_shape_check() -> None:
    feature = torch.randn(2, 3, 4, generator=generator())
    assert hint_mse(feature, feature.clone()).item() == 0.0
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 6.0]])
    assert hint_mse(student, teacher).item() == pytest.approx((0 + 4 + 9 + 4) / 4)
    with pytest.raises(ValueError, match="same shape"):
        hint_mse(torch.zeros(2, 3), torch.zeros(2, 4))


# ---------------------------------------------------------------- attention transfer


def test_at_zero_for_identical_and_scale_invariant() -> None:
    student = torch.randn(2, 3, 5, 5, generator=generator(1))
    teacher = torch.randn(2, 3, 5, 5, generator=generator(2))
    assert attention_transfer(student, student.clone()).item() < 1e-7
    base = attention_transfer(student, teacher)
    assert base.item() > 0
    assert attention_transfer(student * 7.0, teacher * 0.1).item() == pytest.approx(
        base.item(), rel=1e-5
    )


def test_at_different_channel_counts() -> None:
    student = torch.randn(2, 3, 4, 4, generator=generator(3))
    # Duplicating channels leaves the channel mean of |f|^p, hence the attention, unchanged.
    assert attention_transfer(student, torch.cat([student, student], dim=1)).item() < 1e-7
    other = torch.randn(2, 8, 4, 4, generator=generator(4))
    assert attention_transfer(student, other).item() > 0


def test_at_pools_the_larger_map() -> None:
    small = torch.randn(2, 3, 2, 3, generator=generator(5))
    large = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # constant 2x2 blocks
    assert attention_transfer(small, large).item() < 1e-7
    assert attention_transfer(large, small).item() < 1e-7
    # Taller in one input, wider in the other: both are pooled to the smaller of each.
    tall = torch.randn(2, 3, 4, 2, generator=generator(6))
    wide = torch.randn(2, 3, 2, 4, generator=generator(7))
    assert torch.isfinite(attention_transfer(tall, wide))


def test_at_hand_computed_value() -> None:
    # p = 2: a(s) ∝ (1, 4, 9, 16) / sqrt(354), a(t) = (0, 0, 0, 1); both unit vectors, so
    # ‖a(s) - a(t)‖² = 2 - 2⟨a(s), a(t)⟩ = 2 - 32 / sqrt(354).
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    teacher = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]]]])
    expected = (2.0 - 32.0 / math.sqrt(354.0)) / 4  # averaged over the 4 positions
    assert attention_transfer(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_at_rejects_non_4d() -> None:
    with pytest.raises(ValueError, match="4-D"):
        attention_transfer(torch.zeros(2, 3), torch.zeros(2, 3))


# ---------------------------------------------------------------- relational KD


def test_rkd_invariant_to_scale_rotation_translation() -> None:
    student = torch.randn(6, 4, generator=generator(1))
    # Isometry into a wider space (teacher D = 7), then scale and shift.
    teacher = 3.5 * (student @ orthogonal(4, 7)) + torch.randn(7, generator=generator(2))
    assert rkd_distance(student, 0.2 * student).item() < 1e-6
    assert rkd_distance(student, teacher).item() < 1e-6
    assert rkd_angle(student, 0.2 * student).item() < 1e-6
    assert rkd_angle(student, teacher).item() < 1e-6


def test_rkd_positive_for_unrelated_embeddings() -> None:
    student = torch.randn(8, 2, 3, generator=generator(3))  # (N, ...) is flattened
    teacher = torch.randn(8, 5, generator=generator(4))
    assert rkd_distance(student, teacher).item() > 0
    assert rkd_angle(student, teacher).item() > 0


def test_rkd_batch_order_invariant() -> None:
    student = torch.randn(7, 3, generator=generator(5))
    teacher = torch.randn(7, 5, generator=generator(6))
    perm = torch.randperm(7, generator=generator(7))
    for loss in (rkd_distance, rkd_angle):
        assert loss(student[perm], teacher[perm]).item() == pytest.approx(
            loss(student, teacher).item(), rel=1e-5
        )


@pytest.mark.parametrize("n", [1, 2])
def test_rkd_tiny_batches_do_not_crash(n: int) -> None:
    student = torch.randn(n, 3, generator=generator(8), requires_grad=True)
    teacher = torch.randn(n, 4, generator=generator(9))
    assert rkd_angle(student, teacher).item() == 0.0
    distance = rkd_distance(student, teacher)
    assert distance.item() == 0.0  # N = 2: both normalised distances are 1
    (distance + rkd_angle(student, teacher)).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_rkd_identical_samples_give_finite_gradients() -> None:
    student = torch.zeros(4, 3, requires_grad=True)  # every distance and direction is zero
    teacher = torch.randn(4, 3, generator=generator(10))
    total = rkd_distance(student, teacher) + rkd_angle(student, teacher)
    total.backward()
    assert torch.isfinite(total) and total.item() > 0
    assert student.grad is not None and torch.isfinite(student.grad).all()


# ---------------------------------------------------------------- dtypes and devices


@pytest.mark.parametrize("device", DEVICES)
def test_all_losses_bfloat16_and_device(device: str) -> None:
    g = generator(11)
    logits_s, logits_t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    maps_s, maps_t = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 6, 8, 8, generator=g)
    emb_s, emb_t = torch.randn(4, 3, generator=g), torch.randn(4, 5, generator=g)
    cases = [
        (response_kd, logits_s, logits_t, (4.0,)),
        (hint_mse, logits_s, logits_t, ()),
        (attention_transfer, maps_s, maps_t, ()),
        (rkd_distance, emb_s, emb_t, ()),
        (rkd_angle, emb_s, emb_t, ()),
    ]
    for loss, s, t, extra in cases:
        reference = loss(s, t, *extra)
        student = s.to(device, torch.bfloat16).requires_grad_()
        value = loss(student, t.to(device, torch.bfloat16), *extra)
        assert value.dtype == torch.float32 and value.ndim == 0
        assert value.device.type == device
        value.backward()
        assert student.grad is not None and student.grad.dtype == torch.bfloat16
        assert value.item() == pytest.approx(reference.item(), rel=0.1, abs=1e-2)
