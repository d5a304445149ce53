"""verifier.step_timer: a step starts only when SAFETY times the slowest recent step fits."""

from __future__ import annotations

from verifier.step_timer import SAFETY, StepTimer


def test_first_step_always_fits_without_a_guess():
    assert StepTimer().fits(deadline=10.0, now=9.999)


def test_first_guess_counts_as_a_step():
    timer = StepTimer(first_guess=1.0)
    assert timer.fits(deadline=10.0, now=10.0 - SAFETY * 1.0 - 1e-6)
    assert not timer.fits(deadline=10.0, now=10.0 - SAFETY * 1.0 + 1e-6)


def test_slowest_of_the_recent_steps_only():
    timer = StepTimer(history=3)
    for seconds in (5.0, 1.0, 1.0, 1.0):  # the 5 s step has left the window
        timer.record(seconds)
    assert timer.slowest() == 1.0
    timer.record(2.0)
    assert timer.slowest() == 2.0
    assert not timer.fits(deadline=10.0, now=10.0 - SAFETY * 2.0)
    timer.clear()
    assert timer.slowest() == 0.0 and timer.fits(deadline=10.0, now=9.5)


def test_fits_scales_the_recent_steps_to_the_next_steps_work():
    """Input splitting's batch fills up as its queue grows: a step of 1 domain in 0.4 s says
    little about one of 4 (the next predicted 1.6 s, not 0.4 s)."""
    timer = StepTimer()
    timer.record(0.4, work=1)
    assert timer.fits(deadline=1.0, now=0.0)  # as much work as before: 0.5 s
    assert not timer.fits(deadline=1.0, now=0.0, work=4)  # 1.25 x 1.6 s
    assert timer.fits(deadline=2.1, now=0.0, work=4)


def test_a_guess_holds_until_the_first_step_is_recorded():
    """A neuron-split search's root sets the guess (its bound of one domain): it predicts the
    first step, unscaled, and leaves no trace once a step has its own time."""
    timer = StepTimer()
    timer.guess(2.0)
    assert timer.slowest(work=64) == 2.0
    assert not timer.fits(deadline=10.0, now=10.0 - SAFETY * 2.0 + 1e-6)
    timer.record(0.5)
    assert timer.slowest() == 0.5  # (a first_guess would still count: 2.0)
    timer.clear()
    timer.guess(1.0)
    timer.clear()
    assert timer.slowest() == 0.0


def test_steps_of_far_less_work_do_not_predict_a_large_one():
    """A search whose batch doubles each step: a slow early step (another process took the
    core) scaled 32-fold stopped the search with most of its time left. The steps of
    comparable work predict the next one; with none, the largest still does."""
    timer = StepTimer()
    timer.record(0.05, work=2)  # slowed by load
    for work in (4, 8, 16, 32):
        timer.record(0.01, work=work)
    assert timer.slowest(work=64) == 0.01 * 2
    assert timer.fits(deadline=1.0, now=0.0, work=64)
    assert timer.slowest(work=1024) == 0.01 * 32  # none within 2x: the largest, scaled
    assert timer.slowest(work=2) == 0.05  # the slow step is near this work: it counts
    assert timer.slowest() == 0.05  # unscaled: the slowest of all
