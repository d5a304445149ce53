"""``spec robustness`` output read back by the VNN-LIB parser; the image-folder data format."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from verifier.gate.cli import main
from verifier.gate.data import DataError, load_dataset
from verifier.gate.specs import BallOptions, input_box, robustness_vnnlib
from verifier.spec import load_spec, parse_vnnlib


def test_spec_command_round_trips(digits, tmp_path):
    out = tmp_path / "specs"
    assert main(["spec", "robustness", "--model", str(digits.model), "--data", str(digits.data),
                 "--eps", "0.1", "--clip", "0,1", "--out", str(out)]) == 0
    rows = list(csv.reader(open(out / "instances.csv")))
    assert len(rows) == len(digits.y)
    for i, (model_rel, spec_name, timeout) in enumerate(rows):
        assert (out / model_rel).resolve() == digits.model.resolve() and float(timeout) > 0
        spec = load_spec(out / spec_name)
        assert (spec.n_inputs, spec.n_outputs, len(spec.regions)) == (64, 10, 1)
        region = spec.regions[0]
        x = digits.x[i].astype(np.float64)
        np.testing.assert_array_equal(region.lower, np.clip(x - 0.1, 0, 1))
        np.testing.assert_array_equal(region.upper, np.clip(x + 0.1, 0, 1))
        cond = region.condition
        label = int(digits.y[i])
        assert cond.coef.shape[0] == 9  # one disjunct per other class
        # each disjunct reads Y_label - Y_j <= 0
        for d in range(9):
            row = cond.coef[d][np.isfinite(cond.rhs[d])]
            assert row.shape[0] == 1 and row[0][label] == 1 and row[0].sum() == 0


def test_targeted_writes_one_spec_per_other_class(digits, tmp_path):
    out = tmp_path / "t"
    assert main(["spec", "robustness", "--model", str(digits.model), "--data", str(digits.data),
                 "--eps", "0.02", "--targeted", "--limit", "1", "--out", str(out)]) == 0
    specs = sorted(out.glob("*.vnnlib"))
    assert len(specs) == 9
    label = int(digits.y[0])
    for path in specs:
        spec = load_spec(path)
        assert spec.regions[0].condition.coef.shape[0] == 1
        assert f"label{label}_target" in path.name


def test_robustness_text_edge_cases():
    lower, upper = input_box(np.array([0.0, 2.0]), BallOptions(0.5, clip=(0.0, 1.0)))
    np.testing.assert_array_equal(lower, [0.0, 1.0])  # a sample outside the clip range
    np.testing.assert_array_equal(upper, [0.5, 1.0])
    spec = parse_vnnlib(robustness_vnnlib(lower, upper, 1, 3, target=2))
    assert spec.n_inputs == 2 and spec.n_outputs == 3
    with pytest.raises(Exception, match="target"):
        robustness_vnnlib(lower, upper, 1, 3, target=1)
    with pytest.raises(Exception, match="eps"):
        BallOptions(-0.1)


def test_folder_of_npy_with_labels_csv(digits, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = [("file", "label")]
    for i, (x, y) in enumerate(zip(digits.x, digits.y, strict=True)):
        np.save(folder / f"img{i}.npy", x.reshape(8, 8) if i % 2 else x)
        rows.append((f"img{i}.npy", str(int(y))))
    with pytest.raises(DataError, match="differ in shape"):
        _write_and_load(folder, rows)
    for i in range(len(digits.y)):
        np.save(folder / f"img{i}.npy", digits.x[i])
    ds = _write_and_load(folder, rows)
    np.testing.assert_array_equal(ds.x.reshape(len(ds), 64), digits.x)
    np.testing.assert_array_equal(ds.y, digits.y)
    assert ds.names == tuple(f"img{i}.npy" for i in range(len(digits.y)))


def _write_and_load(folder, rows):
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return load_dataset(folder, (1, 64), 10)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="labels.csv"):
        load_dataset(tmp_path, (1, 64), 10)
    (tmp_path / "labels.csv").write_text("a.npy,3\n")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path, (1, 64), 10)
    (tmp_path / "labels.csv").write_text("a.npy,three\nb.npy,x\n")
    with pytest.raises(DataError, match="not an integer"):
        load_dataset(tmp_path, (1, 64), 10)
