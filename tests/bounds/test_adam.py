"""Our Adam against torch.optim.Adam with an exponential step-size schedule."""

from __future__ import annotations

import pytest
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


def _steps(adam, params, gen):
    """Ten ``adam_update`` steps on ``params`` (in place); returns params and moments."""
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step in range(1, 11):
        grads = [torch.randn(p.shape, generator=gen.manual_seed(10 * step + i), dtype=p.dtype)
                 for i, p in enumerate(params)]
        grads[0][:, ::2] = 0  # positions that never get a gradient (v stays 0)
        adam.adam_update(params, grads, m, v, step, 0.05 * 0.9 ** step, (0.9, 0.999), 1e-8)
    return params + m + v


@pytest.mark.parametrize("strided", [False, True])
def test_fused_kernel_and_multi_tensor_form_take_the_same_steps(strided, monkeypatch):
    """``adam_update`` by torch's fused kernel and by the multi-tensor fallback: the same
    parameters and moments up to rounding, in float32 and float64, with positions that never
    get a gradient (a masked alpha's). With a strided parameter the fused kernel is not
    taken (on a view it updated the wrong elements)."""
    import bounds.engine.adam as adam

    real = adam._FUSED
    assert real is not None  # (the pinned torch has the kernel: the path measured)
    gen = torch.Generator()
    calls = {"n": 0}

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    def params():
        out = [torch.rand((6, 5), generator=gen.manual_seed(2)),
               torch.rand((4, 3), generator=gen.manual_seed(3), dtype=torch.float64)]
        return out + ([torch.rand((3, 8), generator=gen.manual_seed(4))[:, ::2]]
                      if strided else [])

    monkeypatch.setattr(adam, "_FUSED", counted)
    fused = _steps(adam, params(), gen)
    assert calls["n"] == (0 if strided else 10)
    monkeypatch.setattr(adam, "_FUSED", None)
    for a, b in zip(fused, _steps(adam, params(), gen), strict=True):
        tol = 1e-12 if a.dtype == torch.float64 else 1e-5
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
