"""Poincare-ball operations and the two geometries the progression head compares region features in.

Poincare ball of curvature -c (c > 0): points of norm < 1/sqrt(c). `expmap0` maps a tangent vector at
the origin onto the ball, `logmap0` maps back, `mobius_add` is the ball's gyrovector addition and
`poincare_distance` the geodesic distance d(x, y) = 2/sqrt(c) artanh(sqrt(c) |(-x) (+) y|), equal to
1/sqrt(c) arcosh(1 + 2c|x - y|^2 / ((1 - c|x|^2)(1 - c|y|^2))). With these conventions d(0, expmap0(v)) = 2|v|.

`GEOMETRIES` names the two geometries of cfg.MODEL.PROGRESSION.GEOMETRY: "poincare" (CheXLearner's
Med-Manifold alignment) and "euclidean" (the ablation). Both clip tangent vectors to a maximum norm
first (feature clipping keeps points off the ball's boundary, where gradients vanish), so the ablation
changes nothing but the geometry.
"""
import math
from typing import Callable, Dict

import torch

MIN_NORM = 1e-15  # floor of norms in divisions (and of squared norms under square roots)
BALL_EPS = 1e-5  # points are kept at norm <= (1 - BALL_EPS) / sqrt(c)


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Norm over the last dimension (kept), with a gradient that stays finite at zero."""
    return x.pow(2).sum(dim=-1, keepdim=True).clamp_min(MIN_NORM).sqrt()


def _check_curvature(c: float) -> float:
    if not c > 0:
        raise ValueError(f"the Poincare ball needs a positive curvature c (cfg.MODEL.PROGRESSION.CURVATURE), got {c}")
    return float(c)


def project_to_ball(x: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """`x` with every point of norm above (1 - BALL_EPS)/sqrt(c) pulled back to that norm."""
    max_norm = (1.0 - BALL_EPS) / math.sqrt(_check_curvature(c))
    norm = _norm(x)
    return torch.where(norm > max_norm, x / norm * max_norm, x)


def expmap0(v: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Exponential map at the origin: tangent vectors [..., D] -> points of the ball [..., D]."""
    sqrt_c = math.sqrt(_check_curvature(c))
    norm = _norm(v)
    return project_to_ball(torch.tanh(sqrt_c * norm) * v / (sqrt_c * norm), c)


def logmap0(y: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Logarithmic map at the origin: points of the ball [..., D] -> tangent vectors [..., D]."""
    sqrt_c = math.sqrt(_check_curvature(c))
    norm = _norm(y)
    return torch.atanh((sqrt_c * norm).clamp(max=1.0 - BALL_EPS)) * y / (sqrt_c * norm)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Mobius addition x (+) y on the ball (broadcasts over leading dimensions)."""
    c = _check_curvature(c)
    xy = (x * y).sum(dim=-1, keepdim=True)
    x2 = x.pow(2).sum(dim=-1, keepdim=True)
    y2 = y.pow(2).sum(dim=-1, keepdim=True)
    numerator = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    denominator = 1 + 2 * c * xy + c ** 2 * x2 * y2
    return numerator / denominator.clamp_min(MIN_NORM)


def poincare_distance(x: torch.Tensor, y: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Geodesic distance [...] between points x and y of the ball (broadcasts over leading dimensions)."""
    sqrt_c = math.sqrt(_check_curvature(c))
    gap = _norm(mobius_add(-x, y, c)).squeeze(-1)
    return 2.0 / sqrt_c * torch.atanh((sqrt_c * gap).clamp(max=1.0 - BALL_EPS))


def clip_tangent(v: torch.Tensor, radius: float) -> torch.Tensor:
    """`v` with norms above `radius` scaled down to it (radius <= 0: unchanged)."""
    if radius <= 0:
        return v
    norm = _norm(v)
    return v * (radius / norm).clamp(max=1.0)


class PoincareBall:
    """Region features as points of the Poincare ball; a change is the gyrovector from prior to current."""

    def __init__(self, curvature: float = 1.0, clip_radius: float = 2.0):
        self.c = _check_curvature(curvature)
        self.clip_radius = float(clip_radius)

    def to_manifold(self, tangent: torch.Tensor) -> torch.Tensor:
        """Tangent vectors at the origin (clipped) -> points of the ball."""
        return expmap0(clip_tangent(tangent, self.clip_radius), self.c)

    def change(self, prior: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """The point (-prior) (+) current: where `current` lies seen from `prior` moved to the origin."""
        return mobius_add(-prior, current, self.c)

    def to_tangent(self, point: torch.Tensor) -> torch.Tensor:
        """Points -> tangent vectors at the origin (inputs to Euclidean layers)."""
        return logmap0(point, self.c)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return poincare_distance(x, y, self.c)


class EuclideanSpace:
    """The ablation: the same pipeline in flat space (identity maps, difference, Euclidean distance)."""

    def __init__(self, curvature: float = 1.0, clip_radius: float = 2.0):
        self.clip_radius = float(clip_radius)

    def to_manifold(self, tangent: torch.Tensor) -> torch.Tensor:
        return clip_tangent(tangent, self.clip_radius)

    def change(self, prior: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return current - prior

    def to_tangent(self, point: torch.Tensor) -> torch.Tensor:
        return point

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _norm(y - x).squeeze(-1)


# cfg.MODEL.PROGRESSION.GEOMETRY -> geometry class, called as cls(curvature, clip_radius).
GEOMETRIES: Dict[str, Callable] = {"poincare": PoincareBall, "euclidean": EuclideanSpace}


def build_geometry(name: str, curvature: float = 1.0, clip_radius: float = 2.0):
    """The geometry called `name` (see GEOMETRIES)."""
    if name not in GEOMETRIES:
        raise ValueError(f"cfg.MODEL.PROGRESSION.GEOMETRY must be one of {sorted(GEOMETRIES)}, got {name!r}")
    return GEOMETRIES[name](curvature, clip_radius)


def pairwise_distances(geometry, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, M] distances between points x [N, D] and y [M, D] in `geometry`."""
    return geometry.distance(x[:, None, :], y[None, :, :])
