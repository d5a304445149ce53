"""branch_points: hash check at load, fallbacks, batch shapes and dtypes, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from bounds.lookup.build import DEFAULT_DIR, MANIFEST, TableError, encode, verify
from bounds.lookup.tables import TableStore, branch_points, table_key
from verifier.cli import main


@pytest.fixture
def table_copy(tmp_path):
    folder = tmp_path / "tables"
    shutil.copytree(DEFAULT_DIR, folder)
    return folder


def _lu():
    return torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 3.0])


def test_flipped_byte_is_refused(table_copy):
    path = table_copy / "sigmoid.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TableError, match="sha256 .* does not match the manifest"):
        branch_points("Sigmoid", *_lu(), store=TableStore(table_copy))
    assert verify(table_copy)["Sigmoid"].startswith("TableError")
    assert verify(table_copy)["Tanh"] == "ok"
    # other tables of the same folder still load
    branch_points("Tanh", *_lu(), store=TableStore(table_copy))


def test_edited_points_with_refreshed_file_hash_are_refused(table_copy):
    """Someone edits a point and updates the manifest's file hash: the payload hash catches it."""
    path = table_copy / "tanh.npz"
    with np.load(path, allow_pickle=False) as npz:
        points, meta = npz["points"].copy(), json.loads(str(npz["meta"]))
    points[0, 200] += 0.5
    buf = io.BytesIO()
    np.savez_compressed(buf, points=points, meta=np.array(json.dumps(meta)))
    path.write_bytes(buf.getvalue())
    manifest = json.loads((table_copy / MANIFEST).read_text())
    manifest["tables"]["Tanh"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (table_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TableError, match="payload hash"):
        branch_points("Tanh", *_lu(), store=TableStore(table_copy))


def test_unknown_format_is_refused(table_copy):
    manifest = json.loads((table_copy / MANIFEST).read_text())
    manifest["format_version"] = 99
    (table_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TableError, match="format 99"):
        branch_points("Sin", *_lu(), store=TableStore(table_copy))


def test_encode_roundtrip_and_wrong_key(table_copy):
    points = np.full((3, 3), np.nan, dtype=np.float32)
    points[0, 1], points[0, 2], points[1, 2] = 0.5, 1.0, 1.5
    meta = {"format_version": 1, "table_version": 1, "key": "Sin", "op": "Sin", "attrs": {},
            "grid": {"lo": 0.0, "hi": 2.0, "step": 1.0, "n": 3}}
    data = encode(points, meta)
    (table_copy / "sin.npz").write_bytes(data)
    manifest = json.loads((table_copy / MANIFEST).read_text())
    entry = manifest["tables"]["Sin"]
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    with np.load(io.BytesIO(data)) as npz:
        entry["payload_sha256"] = json.loads(str(npz["meta"]))["payload_sha256"]
    (table_copy / MANIFEST).write_text(json.dumps(manifest))
    store = TableStore(table_copy)
    p = branch_points("Sin", torch.tensor([0.0, 0.0, 5.0]), torch.tensor([2.0, 1.0, 6.0]),
                      store=store)
    torch.testing.assert_close(p, torch.tensor([1.0, 0.5, 5.5]))  # last one: out of grid
    manifest["tables"]["Cos"] = entry  # Cos pointing at the Sin file
    (table_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TableError, match="holds 'Sin'"):
        branch_points("Cos", torch.tensor([0.0]), torch.tensor([1.0]), store=TableStore(table_copy))


def test_out_of_grid_and_untabled_ops_get_the_midpoint():
    lower = torch.tensor([-20.0, -9.0, 7.0, -1.0], dtype=torch.float64)
    upper = torch.tensor([-10.0, 1.0, 12.0, 9.0], dtype=torch.float64)
    mid = (lower + upper) / 2
    torch.testing.assert_close(branch_points("Sigmoid", lower, upper), mid)
    for op in ("Reciprocal", "Pow", "Mul", "Softmax"):
        torch.testing.assert_close(branch_points(op, lower, upper), mid)


def test_missing_table_in_manifest_gives_midpoint(table_copy):
    manifest = json.loads((table_copy / MANIFEST).read_text())
    del manifest["tables"]["Exp"]
    (table_copy / MANIFEST).write_text(json.dumps(manifest))
    lower, upper = torch.tensor([-1.0]), torch.tensor([3.0])
    assert branch_points("Exp", lower, upper, store=TableStore(table_copy)).item() == 1.0
    assert branch_points("Exp", lower, upper).item() != 1.0  # the shipped table is optimised


def test_relu_like_ops_split_at_zero():
    lower = torch.tensor([-1.0, 0.5, -3.0, -2.0])
    upper = torch.tensor([3.0, 1.5, -1.0, 0.0])
    for op in ("Relu", "LeakyRelu", "Abs"):
        torch.testing.assert_close(branch_points(op, lower, upper),
                                   torch.tensor([0.0, 1.0, -2.0, -1.0]))


def test_batch_shapes_dtypes_and_strictness():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        ends = 20 * torch.rand(2, 4, 3, 5, 5, generator=gen, dtype=dtype) - 10
        lower, upper = ends.amin(0), ends.amax(0)
        for op in ("Sigmoid", "Gelu", "Sin", "Log", "Relu"):
            lo = lower.clamp(min=0.01) if op == "Log" else lower
            up = torch.maximum(upper, lo + 1)
            p = branch_points(op, lo, up)
            assert p.shape == lower.shape and p.dtype == dtype
            assert ((p > lo) & (p < up)).all(), op
    # tiny widths in float32 still give a point strictly inside; zero width gives the end
    lo = torch.tensor([1.0, 0.3, 2.0])
    up = torch.stack([torch.nextafter(torch.nextafter(lo[0], torch.tensor(9.0)),
                                      torch.tensor(9.0)), lo[1] + 1e-6, lo[2]])
    p = branch_points("Tanh", lo, up)
    assert (p[:2] > lo[:2]).all() and (p[:2] < up[:2]).all() and p[2] == 2.0
    assert branch_points("Tanh", torch.empty(0, 3), torch.empty(0, 3)).shape == (0, 3)
    # broadcasting lower against upper
    assert branch_points("Tanh", torch.tensor(-1.0), torch.tensor([0.0, 1.0])).shape == (2,)


def test_gelu_variants_use_their_own_table():
    assert table_key("Gelu", {"approximate": "tanh"}) == "Gelu:tanh"
    assert table_key("Gelu", {}) == "Gelu" and table_key("Sigmoid") == "Sigmoid"
    lower, upper = torch.tensor([-3.0, -1.0]), torch.tensor([4.0, 0.4])
    exact = branch_points("Gelu", lower, upper)
    tanh = branch_points("Gelu", lower, upper, attrs={"approximate": "tanh"})
    assert ((exact > lower) & (exact < upper) & (tanh > lower) & (tanh < upper)).all()


def test_cli_build_and_verify(tmp_path, capsys):
    assert main(["tables", "build", "--ops", "Log", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("Log cells=12720 ")
    assert main(["tables", "verify", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "Log ok\n"
    (tmp_path / "log.npz").write_bytes(b"garbage")
    assert main(["tables", "verify", "--dir", str(tmp_path)]) == 1
    assert "does not match the manifest" in capsys.readouterr().out
    assert main(["tables", "build", "--ops", "Nope", "--out", str(tmp_path)]) == 2
    assert main(["tables", "list"]) == 0
    assert "Sigmoid file=sigmoid.npz" in capsys.readouterr().out
