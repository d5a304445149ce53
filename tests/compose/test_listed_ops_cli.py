"""Every operator ``nncert supports --onnx-operators`` lists verifies through ``nncert verify``
on a test model: exit 0 with a verdict on the first stdout line, never exit 2 (bad input) or
3 (internal error). The one-op models are tests/onnx_import/op_models.py's; the spec is a
VNN-LIB 1.0 box over the op's sampling range and two thresholds on output 0: far below every
output (-1000: ``sat`` would be wrong) and just above its value at the box's centre (the centre
violates: ``unsat`` would be wrong)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx
import pytest

from tests.onnx_import.op_models import OP_MODELS
from verifier.cli import main
from verifier.cli.supports_cmd import answer

LISTED = answer("onnx-operators")


def _spec(n_in: int, n_out: int, low: float, high: float, rhs: float) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines += [f"(assert (>= X_{i} {low}))\n(assert (<= X_{i} {high}))" for i in range(n_in)]
    lines.append(f"(assert (<= Y_0 {rhs}))")
    return "\n".join(lines) + "\n"


def _centre_output(proto: onnx.ModelProto, low: float, high: float) -> tuple[int, int, float]:
    """(inputs, outputs, output 0 at the box centre) by onnxruntime."""
    from verifier.pipeline import ort_only_model
    from verifier.validate import run_onnx

    model = ort_only_model(proto.SerializeToString(), "op", "")
    assert model is not None
    y = run_onnx(model, np.full(model.n_inputs, (low + high) / 2))
    return model.n_inputs, model.n_outputs, float(y[0])


def _verify(tmp_path, proto, low, high, rhs) -> tuple[int, str]:
    onnx_path, spec_path = tmp_path / "m.onnx", tmp_path / "p.vnnlib"
    onnx.save(proto, onnx_path)
    n_in, n_out, _ = _centre_output(proto, low, high)
    spec_path.write_text(_spec(n_in, n_out, low, high, rhs))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["verify", str(onnx_path), str(spec_path), "--timeout", "5"])
    return status, out.getvalue()


class _NoWatchdog:
    def cancel(self) -> None:
        pass


@pytest.fixture
def in_process_cli(monkeypatch):
    """``main(["verify", ...])`` in this process: the timeout counts from the call (not from
    the test process's start) and the overrun watchdog, which exits the process, is off
    (the memory guard is off in every test process: tests/conftest.py)."""
    import verifier.cli.common as common
    import verifier.cli.verify_cmd as verify_cmd

    monkeypatch.setattr(common, "process_age", lambda: 0.0)
    monkeypatch.setattr(verify_cmd, "_watchdog", lambda emitter, seconds: _NoWatchdog())


@pytest.mark.parametrize("op", LISTED)
def test_listed_op_verifies_through_the_cli(tmp_path, op, in_process_cli):
    build, low, high = OP_MODELS[op]
    proto = build()
    centre = _centre_output(proto, low, high)[2]
    for rhs, wrong in ((-1e3, "sat"), (centre + 1e-3 * (1 + abs(centre)), "unsat")):
        status, stdout = _verify(tmp_path, proto, low, high, rhs)
        assert status == 0, (op, rhs, stdout)
        verdict = stdout.splitlines()[0]
        assert verdict in ("sat", "unsat", "unknown", "timeout"), (op, rhs, stdout)
        assert verdict != wrong, (op, rhs, stdout)
