"""Input-split branch-and-bound against exact answers on tiny ReLU networks."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from tests.bab.exact import exact_min, exact_sat
from tests.bab.test_neuron_split import region_for, tiny_net
from verifier.bab.input_split import InputSplitOptions, InputSplitSearch
from verifier.bab.problem import RegionProblem
from verifier.bab.progress import Progress
from verifier.spec.types import InputRegion, OutputCondition


def make_search(graph, region: InputRegion, deadline_s: float = 30.0,
                progress: Progress | None = None, **opts) -> InputSplitSearch:
    problem = RegionProblem.from_region(0, region, "cpu", torch.float64)

    def validate(x: torch.Tensor):
        """The IR in float64 stands in for onnxruntime here."""
        y = run_graph(graph, x.double().reshape(len(x), *graph.inputs[0].shape))[0]
        hit = problem.violated(y.reshape(len(x), -1))
        return x[hit][0] if bool(hit.any()) else None

    return InputSplitSearch(graph, problem, time.monotonic() + deadline_s,
                            InputSplitOptions(**opts), progress or Progress(), validate)


# (seed, delta relative to the exact minimum, the split choice's coefficient floor)
CASES = [(s, d, 0.05 if s % 2 == 0 else 0.0) for s in range(6) for d in (-0.03, 0.03)]


@pytest.mark.parametrize(("seed", "delta", "floor"), CASES)
def test_single_row_matches_exact(seed, delta, floor):
    graph, exact = tiny_net(seed, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    region = region_for(exact, 3, c[None, None], [[m + delta]])
    out = make_search(graph, region, sensitivity_floor=floor).run()
    assert out.verdict == ("sat" if delta > 0 else "unsat"), out.stats


@pytest.mark.parametrize("seed", [30, 31, 32])
def test_disjunctions_and_conjunctions_match_exact(seed):
    graph, exact = tiny_net(seed, n_in=2, hidden=(4, 4))
    lo, hi = -np.ones(2), np.ones(2)
    rows = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    mins = [exact_min(exact, lo, hi, r) for r in rows]
    rng = np.random.default_rng(seed)
    for coef, rhs in (
        (rows[:, None, :], np.array([[mins[0] - 0.03], [mins[1] + rng.choice([-1, 1]) * 0.03]])),
        (rows[None], np.array([[mins[0] + 0.2, mins[1] + 0.2]])),
    ):
        truth = "sat" if exact_sat(exact, lo, hi, coef, rhs) else "unsat"
        # Input splitting shrinks boxes until bounds are exact enough: it is complete here
        # (including conjunctions that are empty only as a whole).
        out = make_search(graph, region_for(exact, 2, coef, rhs)).run()
        assert out.verdict == truth, (coef, rhs, out.stats)


def _hard_unsat():
    graph, exact = tiny_net(4, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    return graph, region_for(exact, 3, c[None, None], [[m - 0.002]])


def test_deadline_in_the_past_returns_timeout_quickly():
    graph, region = _hard_unsat()
    start = time.monotonic()
    out = make_search(graph, region, deadline_s=-1.0).run()
    assert out.verdict == "timeout"
    assert time.monotonic() - start < 2.0


def test_tiny_domain_budget_gives_unknown_never_wrong():
    graph, region = _hard_unsat()
    out = make_search(graph, region, batch=1, max_domains=2).run()
    assert out.verdict in ("unknown", "unsat")
    if out.verdict == "unknown":
        assert out.stats["stopped"] == "domain budget"


def test_progress_callback_receives_events():
    graph, region = _hard_unsat()
    events: list[dict] = []
    out = make_search(graph, region, progress=Progress(events.append, every_s=0.0)).run()
    assert out.verdict == "unsat"
    assert events and {"domains_done", "domains_queued", "global_bound",
                       "elapsed_s"} <= set(events[-1])


@pytest.mark.parametrize("seed", range(8))
def test_clip_keeps_every_point_where_the_linear_bounds_allow_a_violation(seed):
    """Sampled points (and box corners) with L_s(x) <= 0 for all rows of an open disjunct
    must stay inside the clipped box; a refuted disjunct keeps nothing."""
    from verifier.bab.input_clip import clip_boxes

    gen = torch.Generator().manual_seed(seed)
    n, n_disj, rows, d = 4, 3, 2, 3
    lower = torch.randn(n, d, generator=gen, dtype=torch.float64)
    upper = lower + torch.rand(n, d, generator=gen, dtype=torch.float64) * 2
    upper[:, 0] = lower[:, 0]  # a zero-width dimension
    a = torch.randn(n, n_disj * rows, d, generator=gen, dtype=torch.float64)
    a[:, :, 1] = 0.0  # a dimension no row depends on
    c = torch.randn(n, n_disj * rows, generator=gen, dtype=torch.float64)
    c[:, 1] = -math.inf  # a padding row
    refuted = torch.zeros(n, n_disj, dtype=torch.bool)
    refuted[:, 2] = True
    lo, hi = clip_boxes(lower, upper, a, c, n_disj, refuted)
    assert bool((lo >= lower).all()) and bool((hi <= upper).all())
    t = torch.rand(n, 20000, d, generator=gen, dtype=torch.float64)
    t[:, :8] = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=torch.float64)
    x = lower.unsqueeze(1) + t * (upper - lower).unsqueeze(1)  # [n, P, d]
    vals = torch.einsum("nsd,npd->nps", a, x) + c.unsqueeze(1)  # [n, P, S]
    allowed = (vals.reshape(n, -1, n_disj, rows) <= 0).all(-1) & ~refuted.unsqueeze(1)
    possible = allowed.any(-1)  # [n, P]
    inside = ((x >= lo.unsqueeze(1)) & (x <= hi.unsqueeze(1))).all(-1)
    assert bool(inside[possible].all())
    assert bool(possible.any()), "the sample should contain possible violations"
    shrunk = (hi - lo) < (upper - lower) - 1e-9
    assert bool(shrunk.any()), "the clip should cut something in these random cases"


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("inherit", [True, False])
def test_close_thresholds_match_exact(seed, inherit):
    """Thresholds 0.01 either side of the exact minimum, with and without children
    inheriting their parent's linear bounds."""
    graph, exact = tiny_net(seed, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    for delta, truth in ((-0.01, "unsat"), (0.01, "sat")):
        region = region_for(exact, 3, c[None, None], [[m + delta]])
        out = make_search(graph, region, inherit=inherit).run()
        assert out.verdict == truth, (inherit, delta, out.stats)


def test_box_attack_returns_violations_inside_the_boxes():
    from verifier.bab.region_attack import box_attack

    graph, exact = tiny_net(5, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    region = region_for(exact, 3, c[None, None], [[m + 0.05]])
    problem = RegionProblem.from_region(0, region, "cpu", torch.float64)
    lower = torch.stack([problem.lower, problem.lower])
    upper = torch.stack([problem.upper, (problem.lower + problem.upper) / 2])
    attack = box_attack(graph, region, steps=30, restarts=8)
    x = attack(lower, upper, 0, time.monotonic() + 10)
    assert x is not None
    inside = ((x.double() >= lower[0]) & (x.double() <= upper[0])).all(1)
    assert bool(inside.all())
    y = run_graph(graph, x.double().reshape(len(x), *graph.inputs[0].shape))[0]
    assert bool(problem.violated(y.reshape(len(x), -1)).all())


def test_search_attacks_the_worst_domains():
    """With centre checks unable to see the violation (a thin sat region), the periodic PGD
    inside the worst domains finds it; every candidate goes through the validator."""
    from verifier.bab.region_attack import box_attack

    graph, exact = tiny_net(2, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    region = region_for(exact, 3, c[None, None], [[m + 1e-3]])
    search = make_search(graph, region, attack_every=1)
    search.attack = box_attack(graph, region, steps=30, restarts=4)
    centres = search.find_violation
    search.find_violation = lambda dom: (None, centres(dom)[1])  # only the attack may find it
    checked = []
    validate = search.validate
    search.validate = lambda x: checked.append(len(x)) or validate(x)
    out = search.run()
    assert out.verdict == "sat" and checked


def test_region_attack_keeps_to_its_time_share():
    """Whole-region attacks run only once the search's time pays for them: a search that
    cannot end (sat, but blind to counterexamples) runs to its deadline."""
    graph, exact = tiny_net(2, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    region = region_for(exact, 3, c[None, None], [[m + 0.05]])
    search = make_search(graph, region, deadline_s=2.0, attack_every=10**9,
                         region_attack_share=0.1, attack_max_s=0.05)
    search.find_violation = lambda dom: (None, torch.ones(len(dom), dtype=torch.float64))
    search.validate = lambda x: None
    calls = []

    def attack(lower, upper, salt, deadline, full_batch=False):
        calls.append((lower.shape[0], full_batch))
        time.sleep(max(0.0, deadline - time.monotonic()))  # spends its whole slice
        return None

    search.attack = attack
    out = search.run()
    elapsed = time.monotonic() - search.start
    assert out.verdict in ("timeout", "unknown"), out.stats
    # one box, many starts
    assert len(calls) >= 2 and all(n == 1 and full for n, full in calls), (out.stats, elapsed)
    assert search.region_attack_s <= 0.1 * elapsed + 0.05


def test_region_attack_finds_a_violation_the_domains_miss():
    """A thin sat region, centres blind and no per-domain attacks: the whole-region attack
    finds it."""
    from verifier.bab.region_attack import box_attack

    graph, exact = tiny_net(2, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    region = region_for(exact, 3, c[None, None], [[m + 1e-3]])
    search = make_search(graph, region, attack_every=10**9, region_attack_share=1.0,
                         attack_max_s=0.2)
    search.attack = box_attack(graph, region, steps=30, restarts=4)
    centres = search.find_violation
    search.find_violation = lambda dom: (None, centres(dom)[1])
    out = search.run()
    assert out.verdict == "sat" and search.region_attack_s > 0


def test_violation_loss_matches_violated():
    graph, exact = tiny_net(1, n_in=3, hidden=(5, 4))
    rows = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    region = region_for(exact, 3, rows[:, None, :], np.array([[0.1], [-0.2]]))
    problem = RegionProblem.from_region(0, region, "cpu", torch.float64)
    y = torch.randn((200, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = problem.violation_loss(y)
    assert torch.equal(loss <= 0, problem.violated(y))
    lhs = y @ problem.coef.T - problem.rhs  # two disjuncts of one row each
    assert torch.allclose(loss, lhs.min(1).values)


def test_children_inherit_linear_bounds_only_within_the_memory_cap():
    graph, region = _hard_unsat()
    search = make_search(graph, region, inherit_max_bytes=10 << 20)
    seen = []
    bound = search.bound

    def spy(dom, record_linear=False):
        seen.append(dom.lin is not None)
        return bound(dom, record_linear)

    search.bound = spy
    assert search.run().verdict == "unsat"
    assert seen[0] is False and any(seen[1:])
    graph, region = _hard_unsat()
    search = make_search(graph, region, inherit_max_bytes=0)
    seen.clear()
    bound = search.bound
    search.bound = spy
    assert search.run().verdict == "unsat"
    assert not any(seen)


def test_sensitivity_floor_lets_a_wide_dimension_with_a_tiny_coefficient_be_split():
    """|a| x width alone never splits a wide dimension whose coefficient is near zero (the
    relaxation's looseness there is invisible to it); the floor relative to the row's largest
    coefficient does, and leaves clear choices alone."""
    from verifier.bab.input_split import split_dims

    graph, exact = tiny_net(0, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    problem = RegionProblem.from_region(0, region_for(exact, 3, c[None, None], [[0.0]]),
                                        "cpu", torch.float64)
    lower = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    upper = torch.tensor([[1e-3, 0.5, 1e-3], [1e-3, 0.5, 1e-3]], dtype=torch.float64)
    # [N, S=1, d]: domain 0 barely depends on the wide dimension 1; domain 1 not at all
    # along dimension 2, clearly along dimension 0
    coef = torch.tensor([[[1.0, 1e-4, 0.5]], [[2.0, 1e-4, 0.0]]], dtype=torch.float64)
    refuted = torch.zeros((2, 1), dtype=torch.bool)
    root = torch.ones(3, dtype=torch.float64)
    plain = split_dims(coef, lower, upper, problem, refuted, root)
    floored = split_dims(coef, lower, upper, problem, refuted, root, floor=0.05)
    assert plain.tolist() == [0, 0]
    assert floored.tolist() == [1, 1]  # 0.05 x 1.0 x 0.5 > 1.0 x 1e-3
    upper[:, 1] = 0.01  # now narrow: 0.05 x 2 x 0.01 = 1e-3 < 2e-3 of dimension 0
    assert split_dims(coef, lower, upper, problem, refuted, root,
                      floor=0.05).tolist() == [0, 0]


def test_batch_fits_the_memory_budget():
    from verifier.bab.input_split import BYTES_PER_ACTIVATION_DIM, batch_size

    graph, _ = tiny_net(0, n_in=3, hidden=(5, 4))
    activations = sum(math.prod(node.shape) for node in graph.nodes)
    per_domain = BYTES_PER_ACTIVATION_DIM * 4 * activations
    assert batch_size(graph, InputSplitOptions(batch=64)) == 64
    assert batch_size(graph, InputSplitOptions(batch=64,
                                               batch_max_bytes=10 * per_domain)) == 10
    assert batch_size(graph, InputSplitOptions(batch=64, batch_max_bytes=1)) == 1


def test_domain_fields_round_trip_value_names_with_slashes():
    """Queued domains store linear bounds under "lin/<value>/<part>"; value names from
    expanded ops hold "/" (softmax_2/softmax/sum): they must come back unchanged."""
    from bounds.types import LinearBounds
    from verifier.bab.input_split import Domains

    rec = LinearBounds(torch.ones(2, 3, 4), torch.zeros(2, 3), torch.ones(2, 3, 4),
                       torch.ones(2, 3))
    doms = Domains(torch.zeros(2, 4), torch.ones(2, 4), torch.zeros(2),
                   torch.zeros(2, 1, dtype=torch.bool), {"softmax_2/softmax/sum": rec, "h": rec})
    back = Domains.from_fields(doms.fields(), doms.margin)
    assert set(back.lin) == {"softmax_2/softmax/sum", "h"}
    assert torch.equal(back.lin["softmax_2/softmax/sum"].c_hi, rec.c_hi)


def test_input_split_inherits_linear_bounds_through_softmax():
    """Softmax is expanded inside bound_spec, so inherited linear-bound records name values
    (softmax_N/softmax/...) that the search's own graph lacks: no KeyError, a verdict."""
    from onnx import TensorProto, helper, numpy_helper

    from verifier.config import VerifyConfig
    from verifier.onnx_import.loader import import_proto
    from verifier.pipeline import verify
    from verifier.spec.types import OutputCondition, Spec

    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.normal(size=(2, 8)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "W2")
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["H"]), helper.make_node("Relu", ["H"], ["R"]),
             helper.make_node("MatMul", ["R", "W2"], ["Z"]),
             helper.make_node("Softmax", ["Z"], ["Y"], axis=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])], [w1, w2])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = import_proto(proto, proto.SerializeToString(), "softmax")
    lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    xs = rng.uniform(lower, upper, size=(20000, 2)).astype(np.float32)
    ys = run_graph(model.graph, torch.as_tensor(xs).reshape(-1, 1, 2))[0].reshape(-1, 3)
    top = float(ys[:, 0].max())
    # unsafe: y0 >= top + 0.02 (close above the sampled maximum: needs splitting to refute)
    cond = OutputCondition(np.array([[[-1.0, 0.0, 0.0]]]), np.array([[-(top + 0.02)]]))
    spec = Spec((InputRegion(lower, upper, cond),), 2, 3)
    result = verify(model, spec, VerifyConfig(timeout=20, method="bab", check_model=False))
    assert "internal_error" not in result.stats, result
    assert result.verdict in ("unsat", "timeout"), result


def _inverse_norm_graph():
    """y = 1 / (x0 x0 + x1 x1 + 0.1) on [-1, 1]^2: IBP of the products is [-1, 1], so the
    whole box leaves Reciprocal's domain; boxes on one side of each axis do not."""
    import onnx
    from onnx import helper

    from tests.onnx_import.onnx_util import make_model
    from verifier.onnx_import.loader import import_proto

    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("ReduceSum", ["sq"], ["s"], axes=[1], keepdims=1),
             helper.make_node("Add", ["s", "c"], ["d"]),
             helper.make_node("Div", ["one", "d"], ["y"])]
    proto = make_model(nodes, {"x": (1, 2)}, ["y"], {"c": np.float32(0.1),
                                                     "one": np.float32(1.0)}, opset=11)
    data = proto.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data).graph


@pytest.mark.parametrize(("threshold", "verdict"), [(10.5, "unsat"), (9.5, "sat")])
def test_domains_outside_an_op_domain_are_split_not_fatal(threshold, verdict):
    """A batch whose bound raises DomainError is bounded in halves; the failing domains get
    no bound and are split until their intervals stay in the domain (the maximum, 10 at 0,
    decides both thresholds)."""
    graph = _inverse_norm_graph()
    coef = np.array([[[-1.0]]])
    region = InputRegion(np.full(2, -1.0), np.full(2, 1.0),
                         OutputCondition(coef, np.array([[-threshold]])))
    outcome = make_search(graph, region, deadline_s=20.0).run()
    assert outcome.verdict == verdict, outcome


def test_a_batch_out_of_memory_is_bounded_again_in_halves():
    """Bounding a batch that runs out of memory puts it back and later steps take half as
    many: the search still proves what it proves without the refusal (the whole run
    answered ``unknown`` before)."""
    graph, exact = tiny_net(1, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    search = make_search(graph, region_for(exact, 3, c[None, None], [[m - 0.002]]))
    bound, sizes = search.bound, []

    def bound_refusing_large(dom, *args, **kwargs):
        sizes.append(len(dom))
        if len(dom) > 1:
            raise MemoryError("refused")
        return bound(dom, *args, **kwargs)

    search.bound = bound_refusing_large
    out = search.run()
    assert out.verdict == "unsat", out.stats
    assert max(sizes) > 1 and search.batch == 1  # refused, then one domain a step
    assert out.stats["out_of_memory_steps"] >= 1
