"""When an alpha-CROWN step of the bound cascade stops iterating: the region refuted, or the
step unable to refute it at the pace it is gaining (``RefuteOrGiveUp``).

A cascade step's final alpha-CROWN loop only matters if it refutes the region: its alphas are
not handed on, and the search's root (``verifier.bab.search_root``) optimises its own from its
intermediate bounds, which the final loop does not change. So the loop can stop as soon as

- every disjunct is refuted (more iterations change nothing), or
- some open disjunct cannot reach zero in the iterations left even if it kept gaining
  PACE_SLACK times what it gained in its best recent iteration. On Relu nets Adam's gains on
  these bounds shrink as it goes (ERAN 9x200 idx 6453, alpha over CROWN intermediates: -4.93,
  -4.83, -4.74, -4.67 ... -4.50 after 20 iterations), so the projection is optimistic: a step
  it gives up on would, in all likelihood, not have refuted the region either. Not so on
  smooth nets (a sigmoid net's bound jumped from -1.396 to refuted in one pass), where the
  caller keeps ``give_up`` off (``verifier.strategy.cascade_give_up``).

The loop's ``best`` (``bound_spec``'s stop argument) is the bound so far, per spec row
([B, S], rhs taken off: > 0 refutes the row); it is never smaller than the step's starting
(CROWN) bound and never decreases. Stopping early only ends the optimisation: the bound
returned is still the sound one of the alphas found.
"""

from __future__ import annotations

import torch

from verifier.bab.problem import RegionProblem

# Calls seen (passes) before the pace may end the loop, and the recent gains it reads.
MIN_PASSES = 3
RECENT_GAINS = 2
PACE_SLACK = 2.0


class RefuteOrGiveUp:
    """``bound_spec``'s ``stop`` for one region's step of ``iterations`` alpha iterations."""

    def __init__(self, problem: RegionProblem, iterations: int, give_up: bool = True):
        self.problem, self.iterations, self.give_up = problem, iterations, give_up
        self.history: list[torch.Tensor] = []
        self.gave_up = False

    def __call__(self, best: torch.Tensor) -> bool:
        p = self.problem
        rows = best.detach().reshape(best.shape[0], p.n_disjuncts, p.n_rows).double()
        refuted = (rows > 0).any(-1)
        if bool(refuted.all()):
            return True
        self.history.append(rows)
        seen = len(self.history)
        if not self.give_up or seen < MIN_PASSES:
            return False
        steps = torch.stack(self.history[-RECENT_GAINS - 1:])
        pace = (steps[1:] - steps[:-1]).clamp(min=0).amax(0)
        projected = rows + PACE_SLACK * pace * max(0, self.iterations - seen)
        projected = torch.nan_to_num(projected, nan=-torch.inf)
        hopeless = ~refuted & ~(projected > 0).any(-1)
        self.gave_up = bool(hopeless.any())
        return self.gave_up
