"""Our Adam against torch.optim.Adam with an exponential step-size schedule."""

from __future__ import annotations

import torch

from bounds.engine.adam import Adam


def _loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - 1.5) ** 2).sum() + (torch.sin(3 * b) * b).sum() + (a.sum() * b.sum()) ** 2


def test_matches_torch_adam_with_exponential_decay():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn((4, 3), generator=gen, dtype=torch.float64),
             torch.randn((5,), generator=gen, dtype=torch.float64)]
    ours = [t.clone().requires_grad_(True) for t in start]
    ref = [t.clone().requires_grad_(True) for t in start]
    opt = Adam([([ours[0]], 0.1), ([ours[1]], 0.02)], decay=0.95)
    ref_opt = torch.optim.Adam([{"params": [ref[0]], "lr": 0.1},
                                {"params": [ref[1]], "lr": 0.02}])
    sched = torch.optim.lr_scheduler.ExponentialLR(ref_opt, 0.95)
    for _ in range(40):
        for params, optimizer in ((ours, opt), (ref, ref_opt)):
            optimizer.zero_grad()
            _loss(*params).backward()
            optimizer.step()
        sched.step()
        # clamping between steps, as the alpha/beta loops do, keeps the moments
        with torch.no_grad():
            ours[1].clamp_(min=-1.0)
            ref[1].clamp_(min=-1.0)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.equal(ours[0], start[0])


def test_parameters_without_gradient_are_left_alone():
    a = torch.zeros(3, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    opt = Adam([([a, b], 0.1)])
    opt.zero_grad()
    (a * torch.arange(3.0)).sum().backward()
    opt.step()
    assert torch.equal(b, torch.ones(2))
    assert a[0] == 0 and a[1] < 0 and a[2] < 0  # zero gradient: no move; else -lr * sign
