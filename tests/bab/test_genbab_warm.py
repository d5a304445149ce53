"""GenBaB splits never loosen a bound (DESIGN section 6): every child's bound is at least its
parent's, and a child of a multi-split (several neurons split at once) is refuted wherever the
child of its first splits alone is; the warm starts carried across a split (``AlphaCarry``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.graph import Node
from bounds.registry import rules
from tests.bab.test_genbab import net, sampled_min, search
from tests.bab.test_neuron_split import region_for
from verifier.bab.neuron_domains import NeuronDomains, split_domains, split_more
from verifier.bab.warm_start import AlphaCarry

F64 = torch.float64
TOL = 1e-9
FRACTION = 0.1
BIG = 1000.0  # an rhs no bound refutes


def _bound_all(s, kids: NeuronDomains, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(open [M] bool, bound [M]) of every child, bounded as the search bounds them."""
    m = len(kids)
    kids.depth = torch.arange(m)  # row ids: ``bound`` returns the open children only
    out = s.bound(kids, s.options.beta.iterations, first.repeat(m // len(first)))
    is_open = torch.zeros(m, dtype=torch.bool)
    is_open[out.depth] = True
    bound = torch.full((m,), float("inf"), dtype=F64)
    bound[out.depth] = out.bound.min(1).values.to(F64)
    return is_open, bound


def _levels(seed: int, act: str, points: str) -> tuple[float, list]:
    """The root bound and, for multi_split 1, 2, 3 (the same neurons, in order), every
    child's (open, bound); rhs a tenth of the way from the search's own root bound to the
    sampled minimum."""
    graph = net(seed, (act, act))
    c = np.array([1.0, -1.0])
    m, _ = sampled_min(graph, c, n=50_000)
    lb = float(search(graph, region_for(None, 3, c[None, None], [[BIG]]), attack=False,
                      points=points).root().bound.min()) + BIG
    assert m - lb > 1e-3, "construction: a gap for the splits to close"
    s = search(graph, region_for(None, 3, c[None, None], [[lb + FRACTION * (m - lb)]]),
               attack=False, points=points)
    root = s.root()
    assert len(root) == 1
    levels = []
    for extra in range(3):
        kids, first = split_more(root, s.layers, root.candidates[:, 0], s.points, extra,
                                 s.options.batch, s.carry)
        assert len(kids) == 2 ** (extra + 1), "construction: distinct candidates to split"
        levels.append(_bound_all(s, kids, first))
    return float(root.bound.min()), levels


POINTS = pytest.mark.parametrize("points", ["midpoint", "optimized"])


@POINTS
@pytest.mark.parametrize(("seed", "act"), [(3, "Sigmoid"), (12, "Sigmoid"), (6, "Tanh"),
                                           (9, "Tanh")])
def test_children_never_looser_than_their_parent(seed, act, points):
    parent, levels = _levels(seed, act, points)
    for extra, (_, bound) in enumerate(levels):
        assert bool((bound >= parent - TOL).all()), (extra, bound, parent)


TANH_DOWNSTREAM = (
    "known gap: only split neurons' alphas are carried; the 2-split child (5 lower, 1 upper) "
    "also loses its warm start at the second Tanh layer, whose intervals CROWN recomputes "
    "(carrying those too refutes it; not done: a grid relaxation of every such neuron)")


@POINTS
@pytest.mark.parametrize(("seed", "act"), [(3, "Sigmoid"), (12, "Sigmoid"), (13, "Sigmoid"),
                                           (5, "Tanh"), (8, "Tanh")])
def test_multi_split_child_refuted_where_its_first_splits_are(seed, act, points):
    """Child i of a multi-split lies inside child i mod 2**k of its first k splits alone.
    Not guaranteed (each child's alphas are optimised on their own, from its warm start):
    before the warm starts were carried, Sigmoid 3 midpoint, 12 and 13 optimized failed."""
    _, levels = _levels(seed, act, points)
    _check_inside_refuted(levels)


def test_multi_split_child_refuted_tanh_downstream():
    _check_inside_refuted(_levels(9, "Tanh", "midpoint")[1])


def _check_inside_refuted(levels) -> None:
    for extra, (is_open, bound) in enumerate(levels):
        for k in range(1, extra + 1):
            was_open = levels[k - 1][0]
            inside_refuted = ~was_open[torch.arange(len(is_open)) % 2 ** k]
            assert not bool((is_open & inside_refuted).any()), (extra, k, bound)


def test_carried_alpha_keeps_the_parents_planes_where_the_child_can():
    """A Sigmoid on [-4, 5] with alpha 1 (tangent at 5, slope 0.0066): its lower half [-4, 0.5]
    with alpha 1 would get the tangent at 0.5 (slope 0.235); the carried alpha takes the
    child's flattest tangent (at -4, slope 0.0177), the nearest to the parent's planes."""
    graph = net(0, ("Sigmoid",))
    s = search(graph, region_for(None, 3, np.array([[[1.0, -1.0]]]), [[100.0]]), attack=False,
               points="midpoint")
    root = s.root()
    lay = s.layers[0]
    root.lower[lay.value][0, 0, 0], root.upper[lay.value][0, 0, 0] = -4.0, 5.0
    root.alphas[lay.node][0, :, 0, 0] = 1.0
    half = torch.tensor([0.5], dtype=F64)
    kids = split_domains(root, s.layers, torch.tensor([0]), lambda *_: half,
                         AlphaCarry(s.layers))
    node = Node(lay.node, lay.op, (lay.value,), lay.shape)
    rule = rules().get(lay.op)

    def slopes(lo, up, alpha):
        rel = rule.relax(node, torch.tensor([lo], dtype=F64), torch.tensor([up], dtype=F64),
                         torch.tensor([alpha], dtype=F64))
        return float(rel.lower_slope[0]), float(rel.upper_slope[0])

    was = slopes(-4.0, 5.0, 1.0)
    lower_half = float(kids.alphas[lay.node][1, 0, 0, 0])
    assert lower_half == 0.0
    assert float(kids.alphas[lay.node][0, 0, 0, 0]) == 1.0  # [0.5, 5]: the same tangent
    assert abs(slopes(-4.0, 0.5, lower_half)[0] - was[0]) < abs(slopes(-4.0, 0.5, 1.0)[0]
                                                               - was[0])
    # neurons whose interval no split changed keep their alpha; the other rows are untouched
    assert torch.equal(kids.alphas[lay.node][:, :, 0, 1:],
                       root.alphas[lay.node][:, :, 0, 1:].repeat(2, 1, 1))
