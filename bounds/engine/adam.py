"""Adam for the alpha/beta optimisations.

torch.optim.Adam computes the same steps, but its first construction in a process imports
torch._dynamo: about 2 s on CPU, paid by every one-instance-per-process run (VNN-COMP style)
that reaches alpha-CROWN. The update below follows Kingma & Ba (2015) with torch's placement of
epsilon (outside the bias-corrected square root), so trajectories match torch.optim.Adam.

``adam_update`` takes torch's fused kernel (``torch._fused_adam_``, one pass per tensor: the
alpha loops' Adam steps 3-4x faster than the multi-tensor form, which it falls back to where
torch lacks it); ``Adam`` and the pair loop's optimiser (``verifier.bab.pair_loop``) use it.
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
        for params, lr in self.groups:
            live = [p for p in params if p.grad is not None]
            if not live:
                continue
            for p in live:  # (new parameters' moments: zeros, made once)
                if id(p) not in self.moments:
                    self.moments[id(p)] = (torch.zeros_like(p), torch.zeros_like(p))
            moments = [self.moments[id(p)] for p in live]
            adam_update(live, [p.grad for p in live], [x[0] for x in moments],
                        [x[1] for x in moments], self.steps, lr, (self.beta1, self.beta2),
                        self.eps)
        self.groups = [(params, lr * self.decay) for params, lr in self.groups]


_FUSED = getattr(torch, "_fused_adam_", None)


def _fusable(*groups: list[torch.Tensor]) -> bool:
    """Whether the fused kernel may take these tensors: on the CPU (where it was measured)
    and contiguous (on a strided view it updated the wrong elements: torch 2.13, CPU)."""
    return all(t.device.type == "cpu" and t.is_contiguous() for g in groups for t in g)


@torch.no_grad()
def adam_update(params: list[torch.Tensor], grads: list[torch.Tensor], m: list[torch.Tensor],
                v: list[torch.Tensor], step: int, lr: float, betas: tuple[float, float],
                eps: float) -> None:
    """Step ``step`` (from 1) of Adam on ``params`` in place, moments ``m``/``v`` updated in
    place: m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2, then
    p <- p - lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
    if not params:
        return
    b1, b2 = betas
    if _FUSED is not None and _fusable(params, grads, m, v):
        # (the kernel reads the step count from a tensor and leaves it as it is)
        count = torch.tensor(float(step), dtype=torch.float32)
        _FUSED(params, grads, m, v, [], [count] * len(params), lr=lr, beta1=b1, beta2=b2,
               weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
        return
    # the multi-tensor form: one call per stage over all tensors (fewer Python round trips on
    # many small alphas than a loop over them)
    torch._foreach_mul_(m, b1)
    torch._foreach_add_(m, grads, alpha=1.0 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, grads, grads, value=1.0 - b2)
    # (v below the smallest normal number: a square root of zero or of a subnormal costs
    # 5-40x a normal one on x86 (positions without gradient: all of a masked alpha's);
    # sqrt(tiny) / sqrt(1 - beta2) is far below half an ulp of eps in the dtype, so
    # denom + eps, and every step, is the same number either way)
    denom = torch._foreach_clamp_min(v, torch.finfo(v[0].dtype).tiny)
    torch._foreach_sqrt_(denom)
    torch._foreach_div_(denom, math.sqrt(1.0 - b2 ** step))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, m, denom, value=-lr / (1.0 - b1 ** step))
