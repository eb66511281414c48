"""Pure loss functions for knowledge distillation.

Every function takes a student tensor and a teacher tensor and returns a scalar tensor. The
teacher is treated as a constant (detached inside), so gradients reach only the student.
Inputs of any floating dtype are accepted; the arithmetic runs in at least float32 (bfloat16 and
float16 are promoted, float64 stays float64), and the result has that dtype.

- `response_kd`: Hinton et al. 2015, soft-target KL at temperature T, scaled by T².
- `hint_mse`: FitNets (Romero et al. 2015) hint loss, plain MSE.
- `attention_transfer`: Zagoruyko & Komodakis 2017, spatial attention maps.
- `attention_map_kl`: MiniLM (Wang et al. 2020) / TinyBERT (Jiao et al. 2020), a transformer's
  attention probabilities.
- `rkd_distance`, `rkd_angle`: Park et al. 2019, relational KD over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "attention_map_kl",
    "attention_transfer",
    "hint_mse",
    "response_kd",
    "rkd_angle",
    "rkd_distance",
]

#: Norms and distances at or below this are treated as zero (no direction, no scale).
_EPS = 1e-12


def _prepare(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Detach the teacher and cast both to a common dtype of at least float32."""
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    return student.to(dtype), teacher.detach().to(dtype)


def _zero_like_graph(student: Tensor) -> Tensor:
    """A scalar zero still attached to the student's graph, so `backward()` works on it."""
    return student.sum() * 0.0


def _safe_normalize(x: Tensor, dim: int) -> Tensor:
    """L2-normalise along `dim`; vectors of (near-)zero norm map to zero with zero gradient."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    nonzero = norm > _EPS
    safe = torch.where(nonzero, norm, torch.ones_like(norm))
    return torch.where(nonzero, x / safe, torch.zeros_like(x))


def response_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton soft-target loss: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch.

    Logits are (N, C). The KL is summed over classes and divided by N ("batchmean"); the T²
    factor keeps the gradient scale independent of T. Computed from log-softmax, so it stays
    finite for large logits and high temperatures.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"response_kd: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    if student_logits.ndim != 2:
        raise ValueError(
            f"response_kd: logits must be 2-D (batch, classes), got {tuple(student_logits.shape)}"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"response_kd: temperature must be positive and finite, got {temperature}")
    student, teacher = _prepare(student_logits, teacher_logits)
    log_p_student = F.log_softmax(student / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=1)
    p_teacher = log_p_teacher.exp()
    # Classes the teacher gives exactly zero mass contribute 0 (0·log 0 = 0), even for -inf logits.
    terms = torch.where(
        p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), torch.zeros_like(p_teacher)
    )
    return terms.sum() / student.shape[0] * temperature**2


def hint_mse(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """FitNets hint loss: mean of ``(s - t)²`` over all elements; shapes must match exactly."""
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"hint_mse: student feature {tuple(student_feature.shape)} and teacher feature "
            f"{tuple(teacher_feature.shape)} must have the same shape (adapt the student first)"
        )
    student, teacher = _prepare(student_feature, teacher_feature)
    return F.mse_loss(student, teacher, reduction="mean")


def _attention_map(feature: Tensor, p: float) -> Tensor:
    """Per-sample attention vector: ``mean_c |f|^p`` flattened to (N, H·W) and L2-normalised."""
    return _safe_normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer(student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer: ``mean_n,x (a(s_n) - a(t_n))²``, ``a = q/‖q‖₂``, ``q = mean_c |f|^p``.

    Features are (N, C, H, W); channel counts may differ. Where the spatial sizes differ, each
    map is adaptive-average-pooled (on the raw features, before the attention is taken) to the
    smaller height and the smaller width. The squared difference is averaged over positions
    and the batch, as in the authors' code, so that their beta (1000) is the weight to use
    (the paper writes the p-norm of the difference).
    """
    for name, feature in (("student", student_feature), ("teacher", teacher_feature)):
        if feature.ndim != 4:
            raise ValueError(
                f"attention_transfer: {name} feature must be 4-D (N, C, H, W), "
                f"got shape {tuple(feature.shape)}"
            )
    if student_feature.shape[0] != teacher_feature.shape[0]:
        raise ValueError(
            f"attention_transfer: batch sizes differ (student {student_feature.shape[0]}, "
            f"teacher {teacher_feature.shape[0]})"
        )
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"attention_transfer: p must be positive and finite, got {p}")
    student, teacher = _prepare(student_feature, teacher_feature)
    size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
    if tuple(student.shape[2:]) != size:
        student = F.adaptive_avg_pool2d(student, size)
    if tuple(teacher.shape[2:]) != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    diff = _attention_map(student, p) - _attention_map(teacher, p)
    return diff.pow(2).mean()


def attention_map_kl(student_maps: Tensor, teacher_maps: Tensor) -> Tensor:
    """Attention-map transfer: ``KL(teacher ‖ student)`` over keys, averaged over the batch,
    heads and queries (MiniLM's self-attention distribution transfer).

    Maps are softmax probabilities (N, heads, T, T): query rows that sum to 1 over the keys.
    With equal head counts each student head matches its teacher head, as in MiniLM and
    TinyBERT. With different counts no head pairs with another, so both sides are averaged
    over their heads first (a mean of distributions is a distribution): the student's heads
    together must attend where the teacher's do. Token counts must match. Keys the teacher
    gives no mass contribute 0; a student probability of 0 is clamped to `_EPS`, so the loss
    stays finite where the teacher still attends.
    """
    for name, maps in (("student", student_maps), ("teacher", teacher_maps)):
        if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
            raise ValueError(
                f"attention_map_kl: {name} maps must be (N, heads, T, T), "
                f"got shape {tuple(maps.shape)}"
            )
    s_shape, t_shape = tuple(student_maps.shape), tuple(teacher_maps.shape)
    if s_shape[0] != t_shape[0] or s_shape[2] != t_shape[2]:
        raise ValueError(
            f"attention_map_kl: student maps {s_shape} and teacher maps {t_shape} must have "
            "the same batch and token counts (N, ., T, T)"
        )
    student, teacher = _prepare(student_maps, teacher_maps)
    if student.shape[1] != teacher.shape[1]:
        student = student.mean(dim=1, keepdim=True)
        teacher = teacher.mean(dim=1, keepdim=True)
    log_student = student.clamp_min(_EPS).log()
    log_teacher = teacher.clamp_min(_EPS).log()
    terms = torch.where(teacher > 0, teacher * (log_teacher - log_student), 0.0)
    return terms.sum(dim=-1).mean()


def _check_embeddings(name: str, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Validate batch sizes and flatten (N, ...) embeddings to (N, D) in the compute dtype."""
    if student.ndim < 1 or teacher.ndim < 1:
        raise ValueError(f"{name}: embeddings need a batch dimension, got scalars")
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"{name}: batch sizes differ (student {student.shape[0]}, teacher {teacher.shape[0]})"
        )
    student, teacher = _prepare(student, teacher)
    return student.reshape(student.shape[0], -1), teacher.reshape(teacher.shape[0], -1)


def _normalised_distances(embedding: Tensor) -> Tensor:
    """Pairwise Euclidean distances divided by their off-diagonal mean (zero if all coincide)."""
    n = embedding.shape[0]
    centred = embedding - embedding.mean(dim=0, keepdim=True)  # exact for distances, less rounding
    squares = centred.pow(2).sum(dim=1)
    d2 = (squares[:, None] + squares[None, :] - 2.0 * centred @ centred.T).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(n, dtype=d2.dtype, device=d2.device))
    # sqrt has an infinite slope at 0: keep (near-)coincident pairs at distance 0, gradient 0.
    positive = d2 > _EPS
    dist = torch.where(positive, torch.where(positive, d2, 1.0).sqrt(), 0.0)
    mean = dist.sum() / (n * (n - 1))
    return dist / torch.where(mean > 0, mean, 1.0)


def rkd_distance(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """RKD distance loss: Huber (β=1) between mean-normalised pairwise distance matrices.

    For each side, ``d_ij = ‖e_i - e_j‖₂ / μ`` with ``μ`` the mean over the N(N-1) pairs i≠j;
    the loss is ``mean_{i≠j} smooth_l1(d^s_ij, d^t_ij)``. Embeddings (N, ...) are flattened to
    (N, D); D may differ between student and teacher. N < 2 gives 0.
    """
    student, teacher = _check_embeddings("rkd_distance", student_embedding, teacher_embedding)
    n = student.shape[0]
    if n < 2:
        return _zero_like_graph(student)
    rows, cols = torch.triu_indices(n, n, offset=1, device=student.device)
    d_student = _normalised_distances(student)[rows, cols]
    d_teacher = _normalised_distances(teacher)[rows, cols]
    return F.smooth_l1_loss(d_student, d_teacher, beta=1.0, reduction="mean")


def _triplet_cosines(embedding: Tensor) -> Tensor:
    """``c[j, i, k] = cos∠(e_i - e_j, e_k - e_j)``; zero where a difference vector vanishes."""
    differences = embedding[None, :, :] - embedding[:, None, :]  # [j, i] = e_i - e_j
    units = _safe_normalize(differences, dim=2)
    return units @ units.transpose(1, 2)


def rkd_angle(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """RKD angle loss: Huber (β=1) between the cosines of the angle at e_j of each triplet.

    ``c_ijk = ⟨u_ij, u_kj⟩`` with ``u_ij = (e_i - e_j) / ‖e_i - e_j‖₂``; the loss is the mean of
    ``smooth_l1(c^s_ijk, c^t_ijk)`` over the N(N-1)(N-2) triplets of distinct indices. Embeddings
    (N, ...) are flattened to (N, D); D may differ. N < 3 gives 0. Memory is O(N²·D + N³).
    """
    student, teacher = _check_embeddings("rkd_angle", student_embedding, teacher_embedding)
    n = student.shape[0]
    if n < 3:
        return _zero_like_graph(student)
    eye = torch.eye(n, dtype=torch.bool, device=student.device)
    distinct = ~(eye[:, :, None] | eye[:, None, :] | eye[None, :, :])
    c_student = _triplet_cosines(student)[distinct]
    c_teacher = _triplet_cosines(teacher)[distinct]
    return F.smooth_l1_loss(c_student, c_teacher, beta=1.0, reduction="mean")
