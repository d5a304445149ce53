"""Sign's planes: through (0, 1) above and (0, -1) below across 0, through the origin where an
end is 0, constant where stable; sound for every alpha at sampled points (0 itself, both ends,
points next to 0), tighter than the constant planes, and alpha-CROWN moves them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph, Node, TensorInfo
from bounds.registry import rules
from bounds.types import Interval

RULE = rules().get("Sign")
NODE = Node("s", "Sign", ("x",), (1,))
# (l, u): across 0 both ways, from 0, to 0, stable, a point, 0 itself, tiny and huge widths
BOXES = [(-1.0, 2.0), (-3.0, 0.5), (-1.0, 1.0), (0.0, 2.0), (-2.0, 0.0), (0.5, 3.0),
         (-4.0, -1.0), (0.0, 0.0), (-1e-30, 1e-30), (-1e-3, 5e3), (-7e5, 2.0), (1.5, 1.5)]


def _points(l: float, u: float, rng) -> np.ndarray:
    near = [0.0, -0.0, np.nextafter(0.0, 1.0), np.nextafter(0.0, -1.0), 1e-300, -1e-300]
    pts = np.concatenate([[l, u], rng.uniform(l, u, 200), near])
    return pts[(pts >= l) & (pts <= u)]


def _enclose(rel, l, u, rng, dtype):
    for i, (lo, hi) in enumerate(zip(l.tolist(), u.tolist(), strict=True)):
        x = torch.as_tensor(_points(lo, hi, rng), dtype=torch.float64)
        y = torch.sign(x)
        below = rel.lower_slope[i].double() * x + rel.lower_offset[i].double()
        above = rel.upper_slope[i].double() * x + rel.upper_offset[i].double()
        assert bool((below <= y).all()) and bool((y <= above).all()), (
            f"[{lo}, {hi}] {dtype}: planes miss sign at {x[(below > y) | (y > above)]}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planes_enclose_sign_for_every_alpha(dtype):
    rng = np.random.default_rng(0)
    l = torch.tensor([b[0] for b in BOXES], dtype=dtype)
    u = torch.tensor([b[1] for b in BOXES], dtype=dtype)
    _enclose(RULE.relax(NODE, l, u), l, u, rng, dtype)
    for alpha in (torch.zeros_like(l), torch.ones_like(l), torch.rand(l.shape, dtype=dtype),
                  torch.full_like(l, 3.0), torch.full_like(l, -1.0)):  # (clamped)
        _enclose(RULE.relax(NODE, l, u, alpha), l, u, rng, dtype)


def test_default_planes_are_the_steep_ones_on_the_longer_side():
    l, u = torch.tensor([-1.0, -3.0, 0.0, -2.0]), torch.tensor([2.0, 0.5, 2.0, 0.0])
    rel = RULE.relax(NODE, l.double(), u.double())
    # [-1, 2]: the lower plane -1 + x through (0, -1) and (2, 1), the upper plane 1
    assert rel.lower_slope[0] == pytest.approx(1.0) and rel.upper_slope[0] == 0
    assert rel.lower_offset[0] == pytest.approx(-1.0) and rel.upper_offset[0] == pytest.approx(1.0)
    # [-3, 0.5]: the upper plane 1 + 2 x / 3 through (-3, -1) and (0, 1), the lower plane -1
    assert rel.upper_slope[1] == pytest.approx(2 / 3) and rel.lower_slope[1] == 0
    # [0, 2]: the lower plane x / 2 through the origin; [-2, 0]: the upper plane x / 2
    assert rel.lower_slope[2] == pytest.approx(0.5) and rel.lower_offset[2] == pytest.approx(0)
    assert rel.upper_slope[3] == pytest.approx(0.5) and rel.upper_offset[3] == pytest.approx(0)
    assert torch.equal(RULE.alpha.init(l, u), torch.tensor([0.0, 1.0, 0.0, 1.0]))


def _sign_net() -> Graph:
    """y = sign(x) - (2/3) x on x in [-1, 3]: its minimum -1 is reached at 3 and next to 0."""
    nodes = (Node("s", "Sign", ("x",), (1, 1)),
             Node("m", "Mul", ("x", None), (1, 1), consts={1: np.float32(2 / 3)}),
             Node("y", "Sub", ("s", "m"), (1, 1)))
    return Graph((TensorInfo("x", (1, 1), "x"),), (TensorInfo("y", (1, 1), "y"),), nodes)


def test_planes_follow_what_the_constants_lose():
    """IBP (the constant planes): y >= -1 - 2 = -3; the lower plane -1 + (2/3) x through
    (0, -1) and (3, 1) cancels the linear term: CROWN's bound is the true minimum -1 (less the
    rounding allowances), and alpha-CROWN's no worse."""
    box = Interval(torch.tensor([[-1.0]], dtype=torch.float64),
                   torch.tensor([[3.0]], dtype=torch.float64))
    coef, rhs = torch.ones((1, 1, 1), dtype=torch.float64), torch.zeros((1, 1), dtype=torch.float64)
    net = _sign_net()
    with torch.no_grad():
        ibp = float(bound_spec(net, box, coef, rhs, BoundOptions(method="ibp")).lower)
        crown = float(bound_spec(net, box, coef, rhs, BoundOptions(method="crown")).lower)
    alpha = float(bound_spec(net, box, coef, rhs, BoundOptions(method="alpha")).lower)
    assert ibp == pytest.approx(-3.0, abs=1e-5)
    assert crown == pytest.approx(-1.0, abs=1e-5) and alpha >= crown
    x = torch.cat([torch.linspace(-1, 3, 4001, dtype=torch.float32),
                   torch.tensor([-1e-30, 0.0, 3.0])])
    true_min = float((torch.sign(x) - torch.tensor(2 / 3, dtype=torch.float32) * x).min())
    assert alpha <= true_min
