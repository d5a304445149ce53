"""The exact side of fuzzing: real-arithmetic optima (to place a case near its boundary) and
the MILP oracle verdict (``milp_verify`` on the twin network).

``property_optimum(graph, prop)`` is ``T = min over boxes r, disjuncts d, x in box_r of
max_k (coef[d, k] @ f(x) - rhs[d, k])`` for the real-arithmetic network f: the property is
violated (``sat``) iff ``T <= 0``. It is computed by MILP on the exact encoding (no float32
allowance), one solve per (box, disjunct), minimising t subject to ``coef @ y - t <= rhs``.
The solvers stop at a relative gap of 1e-4 (absolute 1e-6: HiGHS and Gurobi defaults), so the
value is exact only up to about
``1e-6 + 1e-4 |T|``; the harness therefore recentres twice (the second solve sees |T| ~ 1e-4
of the first and so is accurate to ~1e-6).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from fuzzing.specs import PropSpec
from verifier.milp.backends import solve
from verifier.milp.encode import encode
from verifier.milp.model import Expr

T_CAP = 1e4  # |t| bound in the optimum MILP; outputs of the generated nets are O(10)


class OracleUnsure(RuntimeError):
    """The exact optimum could not be computed (solver timeout or error)."""


def _bounds(graph, lower: np.ndarray, upper: np.ndarray):
    shape = graph.inputs[0].shape
    n_out = int(np.prod(graph.outputs[0].shape))
    box = Interval(torch.as_tensor(lower, dtype=torch.float64).reshape(1, *shape),
                   torch.as_tensor(upper, dtype=torch.float64).reshape(1, *shape))
    zero = torch.zeros(1, 1, n_out, dtype=torch.float64)
    return bound_spec(graph, box, zero, torch.zeros(1, 1, dtype=torch.float64),
                      BoundOptions(method="crown"))


def _disjunct_min(enc, coef: np.ndarray, rhs: np.ndarray, deadline: float) -> float:
    m = enc.model.copy()
    t = m.add_vars([-T_CAP], [T_CAP], name="t")
    out = enc.output
    lhs = Expr(np.concatenate([out.idx, t]),
               np.hstack([coef @ out.mat, -np.ones((coef.shape[0], 1))]), coef @ out.const)
    m.add_rows(lhs, -np.inf, rhs)
    m.objective = {int(t[0]): 1.0}
    # Gurobi where usable (far faster on the few hard ones), else HiGHS; a solver that ends
    # without an optimum (HiGHS occasionally reports "Solve error") hands over to the other.
    res = solve(m, max(deadline - time.monotonic(), 0.01), "auto")
    if res.status != "optimal":
        other = "highs" if res.backend == "gurobi" else "gurobi"
        res = solve(m, max(deadline - time.monotonic(), 0.01), other)
    if res.status != "optimal":
        raise OracleUnsure(f"optimum MILP ended {res.status}")
    if enc.model.n_binaries:  # the LP on the optimal pattern: an exactly attained value
        lp = solve(m.with_integers_fixed(res.x), max(deadline - time.monotonic(), 0.01),
                   res.backend)
        if lp.status == "optimal":
            return min(float(res.objective), float(lp.objective))
    return float(res.objective)


def property_optimum(graph, prop: PropSpec, deadline: float) -> float:
    """T (see module doc) for the real-arithmetic network ``graph`` (ReLU and affine ops)."""
    best = np.inf
    for lower, upper in prop.boxes:
        res = _bounds(graph, lower, upper)
        enc = encode(graph, lower, upper, res.intermediate, res.deltas, float_errors=False)
        for d in range(prop.coef.shape[0]):
            best = min(best, _disjunct_min(enc, prop.coef[d], prop.rhs[d], deadline))
    return best


def milp_oracle(model, spec, deadline: float, backend: str = "highs") -> tuple[str, object]:
    """``milp_verify`` with the float32 rounding allowance: ('sat', cex) | ('unsat', None) |
    ('unknown' or 'timeout', None)."""
    from verifier.milp import milp_verify

    verdict, cex, _ = milp_verify(model, spec, deadline, backend=backend)
    return verdict, cex
