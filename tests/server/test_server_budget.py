"""One intake budget (issue 19 items 4 and 5): constant folding and spec expansion are counted
before anything is allocated, run in a sandboxed child process under the job memory limit,
and what the worker would refuse is refused at submission with a 4xx naming the problem."""

from __future__ import annotations

import re

import httpx
import onnx
import pytest
from hostile_inputs import (
    BOMB_ELEMENTS,
    empty_box_spec,
    folding_bomb_model,
    sum_model,
    wide_disjunction_spec,
)
from live import LiveServer
from server_util import SPEC_UNSAT, client_for, settings_for, submit, tiny_model_bytes

from server.errors import ApiError
from server.sandbox import Sandbox
from verifier.onnx_import.fold import MAX_FOLDED_ELEMENTS, FoldTooLarge, predicted_elements


def upload(client, data: bytes):
    return client.post("/v1/models", files={"file": ("m.onnx", data, "application/octet-stream")})


@pytest.fixture()
def client(tmp_path):
    with client_for(settings_for(tmp_path / "data", workers=0)) as c:
        yield c


def test_folding_bomb_is_refused_before_it_is_built(client):
    assert len(folding_bomb_model()) < 200
    r = upload(client, folding_bomb_model())
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert f"{BOMB_ELEMENTS} elements" in message and "ConstantOfShape" in message


def test_fold_prediction_counts_outer_products_exactly():
    """[N, 1] x [1, N] MatMul and Add broadcasts are counted from shapes alone; dims whose
    product overflows int64 are counted exactly (numpy's prod would wrap)."""
    import numpy as np

    col, row = np.zeros((20_000, 1), np.float32), np.zeros((1, 20_000), np.float32)
    for op in ("MatMul", "Add"):
        node = onnx.helper.make_node(op, ["a", "b"], ["c"])
        assert predicted_elements(node, [col, row]) == 400_000_000
    shape = np.array([1 << 32, 1 << 32], np.int64)
    node = onnx.helper.make_node("ConstantOfShape", ["s"], ["c"])
    assert predicted_elements(node, [shape]) == 1 << 64


def test_loader_refuses_the_bomb_with_a_model_error():
    """The CLI path: the importer raises FoldTooLarge (a ModelError: exit 2)."""
    from verifier.onnx_import.loader import import_proto

    data = folding_bomb_model()
    with pytest.raises(FoldTooLarge, match=str(MAX_FOLDED_ELEMENTS)):
        import_proto(onnx.load_model_from_string(data), data, "bomb")


def test_wide_disjunction_is_refused_by_count(client):
    model_id = upload(client, sum_model()).json()["id"]
    r = submit(client, wide_disjunction_spec(), model_id=model_id)
    assert r.status_code == 422, r.text
    assert "65536 input boxes of 1500 inputs" in r.json()["error"]["message"]


def test_small_disjunction_is_accepted(client):
    model_id = upload(client, sum_model(8)).json()["id"]
    r = submit(client, wide_disjunction_spec(8, 3), model_id=model_id)
    assert r.status_code == 202, r.text


def test_empty_input_box_is_refused_at_submission(client):
    r = submit(client, empty_box_spec())
    assert r.status_code == 422, r.text
    assert "every input box is empty" in r.json()["error"]["message"]


def test_constant_false_spec_is_still_accepted(client):
    """A spec whose assert is false on purpose has no region either; it is not refused."""
    spec = SPEC_UNSAT + "(assert (<= 1.0 0.0))\n"
    assert submit(client, spec).status_code == 202


def allocate(mib: int) -> int:
    """Runs in the sandbox: hold ``mib`` MiB for long enough to be seen."""
    import time

    held = [b"\x01" * (1 << 20) for _ in range(mib)]
    time.sleep(30)
    return len(held)


def answer(value: int) -> int:
    return value + 1


def refuse() -> None:
    raise ApiError(418, "refused in the child")


def test_sandbox_kills_a_check_over_the_memory_limit(tmp_path):
    sandbox = Sandbox(settings_for(tmp_path, job_memory_mb=200))
    with pytest.raises(ApiError, match="needs more than 200 MiB") as caught:
        sandbox.run(allocate, (400,), "model")
    assert caught.value.status == 422


def test_sandbox_returns_values_and_api_errors(tmp_path):
    sandbox = Sandbox(settings_for(tmp_path))
    assert sandbox.run(answer, (41,), "model") == 42
    with pytest.raises(ApiError, match="refused in the child") as caught:
        sandbox.run(refuse, (), "spec")
    assert caught.value.status == 418


def test_sandbox_times_out(tmp_path):
    sandbox = Sandbox(settings_for(tmp_path, intake_timeout_s=1.0))
    with pytest.raises(ApiError, match="longer than 1 s"):
        sandbox.run(allocate, (1,), "spec")


def peak_and_current_mib(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a process in MiB."""
    text = open(f"/proc/{pid}/status").read()
    value = {k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) / 1024
             for k in ("VmHWM", "VmRSS")}
    return value["VmHWM"], value["VmRSS"]


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def test_server_memory_stays_flat_under_hostile_intake(tmp_path):
    """Acceptance: the API process's peak RSS stays within 300 MB of its idle level while it
    takes the folding bomb and the 65,536-box spec (it grew 570 MB and 3.8 GB before)."""
    with LiveServer(tmp_path / "data", workers=0) as server:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            tiny = submit(http, SPEC_UNSAT)  # warm up: imports, forkserver
            assert tiny.status_code == 202, tiny.text
            reset_peak(server.proc.pid)
            _, idle = peak_and_current_mib(server.proc.pid)
            assert upload(http, folding_bomb_model()).status_code == 422
            model_id = upload(http, sum_model()).json()["id"]
            wide = submit(http, wide_disjunction_spec(), model_id=model_id)
            assert wide.status_code == 422, wide.text
            peak, _ = peak_and_current_mib(server.proc.pid)
    assert peak - idle < 300, f"server peak {peak:.0f} MiB, idle {idle:.0f} MiB"


def test_cuda_jobs_are_refused_without_a_gpu(client):
    """device=cuda on a machine without CUDA failed every job at once; it is a 422 now (and
    accepted where torch sees a device)."""
    import torch

    r = submit(client, SPEC_UNSAT, device="cuda")
    if torch.cuda.is_available():
        assert r.status_code == 202, r.text
    else:
        assert r.status_code == 422, r.text
        assert "no CUDA device" in r.json()["error"]["message"]
    assert submit(client, SPEC_UNSAT, device="cpu").status_code == 202


def test_memory_below_what_a_worker_needs_is_refused(client):
    """memory_mb=4 (and 257) was accepted and every such job failed "memory limit of ...
    exceeded" (found by the 5-minute schemathesis runs)."""
    r = submit(client, SPEC_UNSAT, memory_mb=4)
    assert r.status_code == 422, r.text
    assert "below the 384 MiB" in r.json()["error"]["message"]
    assert submit(client, SPEC_UNSAT, memory_mb=384).status_code == 202


def test_empty_form_fields_are_refused(client):
    """device= (empty) was read as absent and the job ran on 'auto'; schemathesis flagged
    the accepted schema-violating request."""
    for field in ("device", "method", "timeout", "memory_mb"):
        r = submit(client, SPEC_UNSAT, **{field: ""})
        assert r.status_code == 422, (field, r.text)
        assert f"{field} sent empty" in r.json()["error"]["message"]
    batch = client.post("/v1/verifications/batch",
                        files={"model": ("m.onnx", tiny_model_bytes())},
                        data={"spec_texts": [SPEC_UNSAT, ""]})
    assert batch.status_code == 422 and "spec_texts" in batch.text


def _dequantized_weights_model(n: int) -> onnx.ModelProto:
    """x [1, 1] times int8 weights [1, n] dequantized by DequantizeLinear (a quantized
    model's weights, folded at import to n floats)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((1, n), np.int8), "wq"),
             numpy_helper.from_array(np.array(0.5, np.float32), "scale")]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_a_folded_constant_may_be_as_large_as_the_largest_initializer(monkeypatch):
    """Weights dequantized at import are as many as their int8 initializer holds: above the
    fixed cap (here lowered to 1000 elements) they import, while a constant that outgrows
    every initializer is still refused."""
    from verifier.onnx_import import fold
    from verifier.onnx_import.loader import import_proto

    monkeypatch.setattr(fold, "MAX_FOLDED_ELEMENTS", 1000)
    model = _dequantized_weights_model(3000)
    data = model.SerializeToString()
    imported = import_proto(onnx.load_model_from_string(data), data, "dq")
    assert imported.graph.outputs[0].shape[-1] == 3000
    bomb = folding_bomb_model()
    with pytest.raises(FoldTooLarge, match="above the limit of 1000"):
        import_proto(onnx.load_model_from_string(bomb), bomb, "bomb")
