"""The ReLU neuron-split search ends by its deadline, and by the bound engines' when that is
earlier, although pieces of its steps (an attack's last iteration, autograd's backward, slow
steps) cannot read the clock. (oval21 cifar_deep_kw img7479 at a 60 s cap: the search's
attack ran to the stage's deadline, past the engines' earlier one, and the run ended 0.14 s
past its timeout.)"""

from __future__ import annotations

import time

import numpy as np
import torch

from bounds.engine.deadline import engine_deadline
from bounds.engine.forward import run_graph
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from verifier.bab import pair_loop
from verifier.bab.neuron_domains import split_domains
from verifier.bab.neuron_options import expected_kids
from verifier.step_timer import StepTimer

OVERSHOOT_S = 0.3  # how far past its deadline the stand-in attack returns


def open_search(deadline_s: float, **opts):
    """A search that cannot end by itself before its deadline: a violated property (the
    centre violates it) whose counterexamples are never validated, on a net too wide to
    split to the end in seconds."""
    graph, _ = tiny_net(7, n_in=4, hidden=(16, 16))
    c = np.array([1.0, -1.0, 0.0])
    y = run_graph(graph, torch.zeros(1, 4, dtype=torch.float64))[0].reshape(-1).numpy()
    region = region_for(None, 4, c[None, None], [[float(c @ y) + 0.01]])
    search = make_search(graph, region, deadline_s, attack=False, **opts)
    search.validate = lambda x: None
    return search


class LateAttack:
    """Runs to its deadline and then OVERSHOOT_S past it (as an attack's last iteration may),
    finding nothing."""

    last_loss = 1.0

    def __call__(self, seed: int, deadline: float, starts=None):
        time.sleep(max(0.0, deadline - time.monotonic()) + OVERSHOOT_S)


def test_attacks_end_by_the_engines_earlier_deadline():
    search = open_search(2.0)
    search.attack = LateAttack()  # the first step attacks
    deadline = search.deadline
    with engine_deadline(deadline - 2 * OVERSHOOT_S):  # as strategy.run_methods has them
        out = search.run()
    assert out.verdict == "timeout"
    assert time.monotonic() <= deadline


def test_steps_getting_slower_end_by_the_deadline():
    """Each step takes 1.15x the one before in a piece that does not read the clock: the
    search must not start a step that would end past its deadline."""
    search = open_search(4.0, batch=8)
    deadline = search.deadline
    choose, steps = search.choose, []

    def slow_choose(dom, *args):
        time.sleep(0.2 * 1.15 ** len(steps))
        steps.append(1)
        return choose(dom, *args)

    search.choose = slow_choose
    out = search.run()
    assert out.verdict == "timeout"
    assert len(steps) >= 2  # (the search ran steps, and then stopped in time)
    assert time.monotonic() <= deadline


def test_no_first_step_when_the_roots_bound_would_not_fit():
    """The first step is predicted from the root's own bound (one domain, as a step bounds
    its children): on a VGG16-size net a first step started with 3.5 s left and its set-up
    alone took 13 s. Here the bound takes 0.6 s in a piece that cannot read the clock, and
    after the root less than that is left: no step starts, the search ends in time."""
    search = open_search(1.0)
    deadline, bound, calls = search.deadline, search.bound, []

    def slow_bound(*args, **kwargs):
        calls.append(1)
        time.sleep(0.6)
        return bound(*args, **kwargs)

    search.bound = slow_bound
    out = search.run()
    assert out.verdict == "timeout"
    assert len(calls) == 1  # the root's
    assert time.monotonic() <= deadline


def test_pair_loop_takes_no_step_past_its_deadline(monkeypatch):
    """Slow passes (0.15 s each, 20 iterations): the optimisation stops while a gradient step
    and the sound bound pass after it still fit, and its bounds are those of the best
    iterate."""
    search = open_search(30.0, narrow_dead=False)
    root = search.root()
    kids = split_domains(root, search.layers, root.candidates[:, 0])
    bound = pair_loop.split_bound

    def slow_bound(*args, **kwargs):
        time.sleep(0.15)
        return bound(*args, **kwargs)

    monkeypatch.setattr(pair_loop, "split_bound", slow_bound)
    search.deadline = time.monotonic() + 1.2
    out = search.bound(kids, 20, reuse=True)
    assert time.monotonic() <= search.deadline
    assert torch.all(out.bound >= kids.bound)


def _sized_steps(shrink: bool, seconds: float, monkeypatch):
    """A search whose alpha-beta passes take 2 ms per (domain, row) pair on top of their
    work (a step's cost grows with its batch, as on conv nets); returns (verdict, step
    sizes, deadline). The net is a fully connected Relu chain, whose pair loop would
    otherwise optimise with chain_guide's fused passes and call split_bound only to certify
    the pairs it proves: step costs would then follow how many it proves, not the batch."""
    search = open_search(seconds, batch=16, shrink_last_steps=shrink, chain_pass=False)
    deadline, step, sizes = search.deadline, search._step, []
    bound = pair_loop.split_bound

    def sized_step(queue, size):
        sizes.append(size)
        return step(queue, size)

    def slow_bound(inter, start, coef, *args, **kwargs):
        time.sleep(0.002 * coef.shape[0])
        return bound(inter, start, coef, *args, **kwargs)

    search._step = sized_step
    monkeypatch.setattr(pair_loop, "split_bound", slow_bound)
    return search.run().verdict, sizes, deadline


def test_shrunk_steps_end_by_the_deadline(monkeypatch):
    verdict, sizes, deadline = _sized_steps(True, 4.0, monkeypatch)
    assert verdict == "timeout" and len(sizes) >= 2
    assert time.monotonic() <= deadline


def test_last_step_size_follows_the_time_left():
    """Full steps while the slowest recent one fits (x step_timer.SAFETY); then a batch sized by
    the step-time model, none under LAST_STEP_MIN; without shrinking, none at all."""
    search = open_search(30.0, batch=64)
    full = expected_kids(64, search._extra_splits(), 64)  # a full step's children
    for seconds in (0.5, 1.0):  # estimate 1.25 s
        search.counters.step_timer.record(seconds, full)
    sizes = {}
    for left in (2.0, 1.0, 0.8, 0.5):
        search.deadline = time.monotonic() + left
        sizes[left] = search._step_size()
    assert sizes[2.0] == 64 and sizes[0.5] == 0
    assert 0 < sizes[0.8] < sizes[1.0] < 64  # (fails without shrinking)
    search = open_search(30.0, batch=16, shrink_last_steps=False)
    search.counters.step_timer.record(1.0, expected_kids(16, search._extra_splits(), 16))
    search.deadline = time.monotonic() + 1.0
    assert search._step_size() == 0


def test_a_step_with_more_children_than_the_last_is_predicted_longer():
    """TinyYOLO: the first step split the root alone into 32 children (multi-split) in 19 s;
    the next, 32 queued parents, makes 64 and takes twice that. With 33 s left it must not
    start at full size (it ran past the deadline on the 19 s estimate); a batch of the old
    step's children does fit."""
    search = open_search(300.0, batch=64)
    extra = 4
    search._extra_splits = lambda: extra
    assert expected_kids(1, extra, 64) == 32 and expected_kids(32, extra, 64) == 64
    search.counters.step_timer.record(19.0, 32)
    search.deadline = time.monotonic() + 33.0
    size = search._step_size(32)
    assert 0 < size < 64
    assert expected_kids(min(size, 32), extra, size) <= 32 + 16  # 1.25 x 19 x scale <= 33
    search.deadline = time.monotonic() + 60.0  # 1.25 x 38 s = 47.5 s fits: a full step
    assert search._step_size(32) == 64
    search.deadline = time.monotonic() + 23.0  # not even 32 children (23.75 s) fit
    assert search._step_size(32) < 16


def test_the_step_timer_scales_recorded_steps_to_the_work_asked():
    timer = StepTimer()
    timer.record(2.0, 10)
    assert timer.slowest() == 2.0 and timer.slowest(20) == 4.0
    assert timer.slowest(5) == 1.5  # half the work: at most half of the time is taken as fixed
    timer.record(1.0)  # a step that did not say its work counts as it is
    assert timer.slowest(1) == 1.1 and timer.slowest(40) == 8.0
