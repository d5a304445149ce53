"""Adam for the alpha/beta optimisations.

torch.optim.Adam computes the same steps, but its first construction in a process imports
torch._dynamo: about 2 s on CPU, paid by every one-instance-per-process run (VNN-COMP style)
that reaches alpha-CROWN. The update below follows Kingma & Ba (2015) with torch's placement of
epsilon (outside the bias-corrected square root), so trajectories match torch.optim.Adam.
"""

from __future__ import annotations

import math

import torch


class Adam:
    """Adam over groups of leaf tensors, each group with its own step size; every ``step``
    multiplies the step sizes by ``decay`` (an exponential schedule, 1.0: constant)."""

    def __init__(self, groups: list[tuple[list[torch.Tensor], float]],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 decay: float = 1.0) -> None:
        self.groups = [(list(params), float(lr)) for params, lr in groups]
        self.beta1, self.beta2 = betas
        self.eps, self.decay = eps, decay
        self.steps = 0
        self.moments: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        correction1 = 1.0 - self.beta1 ** self.steps
        root_correction2 = math.sqrt(1.0 - self.beta2 ** self.steps)
        for params, lr in self.groups:
            live = [p for p in params if p.grad is not None]
            if not live:
                continue
            # one multi-tensor call per stage (the same arithmetic per element as the
            # one-tensor form: fewer Python round trips on many small alphas)
            for p in live:  # (new parameters' moments: zeros, made once)
                if id(p) not in self.moments:
                    self.moments[id(p)] = (torch.zeros_like(p), torch.zeros_like(p))
            moments = [self.moments[id(p)] for p in live]
            grads = [p.grad for p in live]
            m, v = [x[0] for x in moments], [x[1] for x in moments]
            torch._foreach_mul_(m, self.beta1)
            torch._foreach_add_(m, grads, alpha=1.0 - self.beta1)
            torch._foreach_mul_(v, self.beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1.0 - self.beta2)
            # (v below the smallest normal number: a square root of zero or of a subnormal
            # costs 5-40x a normal one on x86 (positions without gradient: all of a masked
            # alpha's); sqrt(tiny) / sqrt(1 - beta2) is far below half an ulp of eps in the
            # dtype, so denom + eps, and every step, is the same number either way)
            denom = torch._foreach_clamp_min(v, torch.finfo(v[0].dtype).tiny)
            torch._foreach_sqrt_(denom)
            torch._foreach_div_(denom, root_correction2)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(live, m, denom, value=-lr / correction1)
        self.groups = [(params, lr * self.decay) for params, lr in self.groups]
