"""modeling/hyperbolic.py: Poincare-ball operations against closed forms, and the Euclidean ablation."""
import math

import pytest
import torch

from cxr_codet.modeling.hyperbolic import (
    EuclideanSpace,
    PoincareBall,
    build_geometry,
    expmap0,
    logmap0,
    mobius_add,
    poincare_distance,
)


def arcosh_distance(x, y, c):
    """The Poincare distance in its arcosh form, computed independently of mobius_add."""
    num = 2 * c * (x - y).pow(2).sum(-1)
    den = (1 - c * x.pow(2).sum(-1)) * (1 - c * y.pow(2).sum(-1))
    return torch.acosh(1 + num / den) / math.sqrt(c)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_poincare_maps_and_distance_match_closed_forms(c):
    torch.manual_seed(0)
    v = torch.randn(6, 5, dtype=torch.float64) * 0.6
    w = torch.randn(6, 5, dtype=torch.float64) * 0.6
    x, y = expmap0(v, c), expmap0(w, c)
    assert (x.norm(dim=-1) < 1 / math.sqrt(c)).all()
    torch.testing.assert_close(logmap0(x, c), v)
    torch.testing.assert_close(poincare_distance(torch.zeros_like(v), x, c), 2 * v.norm(dim=-1))
    torch.testing.assert_close(poincare_distance(x, y, c), arcosh_distance(x, y, c))
    torch.testing.assert_close(poincare_distance(x, y, c), poincare_distance(y, x, c))
    assert poincare_distance(x, x, c).abs().max() < 1e-6


def test_mobius_addition_identities_and_the_ball_boundary():
    torch.manual_seed(1)
    x = expmap0(torch.randn(4, 3, dtype=torch.float64))
    torch.testing.assert_close(mobius_add(torch.zeros_like(x), x), x)
    torch.testing.assert_close(mobius_add(x, torch.zeros_like(x)), x)
    assert mobius_add(-x, x).abs().max() < 1e-12
    far = expmap0(torch.full((1, 3), 1e4))
    assert far.norm() < 1.0 and torch.isfinite(poincare_distance(far, x)).all()
    with pytest.raises(ValueError, match="positive curvature"):
        expmap0(x, c=0.0)


def test_small_curvature_approaches_twice_the_euclidean_distance():
    x = torch.tensor([[0.01, 0.02]], dtype=torch.float64)
    y = torch.tensor([[-0.03, 0.01]], dtype=torch.float64)
    assert poincare_distance(x, y, 1e-6).item() == pytest.approx(2 * (x - y).norm().item(), rel=1e-4)


def test_geometries_change_and_distance():
    ball, flat = PoincareBall(curvature=1.0, clip_radius=2.0), EuclideanSpace(clip_radius=2.0)
    prior, current = torch.tensor([[0.3, 0.0]]), torch.tensor([[0.0, 0.4]])
    torch.testing.assert_close(flat.change(prior, current), current - prior)
    torch.testing.assert_close(flat.distance(prior, current), torch.tensor([0.5]))
    torch.testing.assert_close(ball.distance(ball.change(prior, current), torch.zeros(1, 2)), ball.distance(prior, current))
    assert ball.to_manifold(torch.tensor([[30.0, 40.0]])).norm() == pytest.approx(math.tanh(2.0), rel=1e-5)
    assert flat.to_manifold(torch.tensor([[30.0, 40.0]])).norm() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="GEOMETRY must be one of"):
        build_geometry("spherical")
