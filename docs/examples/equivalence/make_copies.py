"""Write a float16 copy and a pruned copy of an ONNX model, for the equivalence gate example.

    python docs/examples/equivalence/make_copies.py MODEL.onnx OUT_DIR [--prune F]

* ``OUT_DIR/<stem>_fp16.onnx``: every float32 initializer rounded to the nearest float16 value
  (stored as float32 again, so the copy computes in float32 like the original and only the
  weights change, as a float16 export followed by an upcast does).
* ``OUT_DIR/<stem>_pruned.onnx``: in every weight matrix (initializers of rank >= 2), the
  fraction F (default 0.2) of entries smallest in magnitude set to 0 (biases kept).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def rounded_to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose float32 initializers hold float16-representable values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            t.CopyFrom(numpy_helper.from_array(a.astype(np.float16).astype(np.float32), t.name))
    return out


def pruned(model: onnx.ModelProto, fraction: float) -> onnx.ModelProto:
    """A copy with the ``fraction`` smallest-magnitude entries of each weight matrix zeroed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        a = numpy_helper.to_array(t).copy()
        if a.ndim >= 2 and a.size:
            cut = np.quantile(np.abs(a), fraction)
            a[np.abs(a) <= cut] = 0
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out_dir")
    parser.add_argument("--prune", type=float, default=0.2, metavar="F")
    args = parser.parse_args()
    model, out = onnx.load(args.model), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.model).stem
    onnx.save(rounded_to_float16(model), out / f"{stem}_fp16.onnx")
    onnx.save(pruned(model, args.prune), out / f"{stem}_pruned.onnx")
    print(f"wrote {out / f'{stem}_fp16.onnx'} and {out / f'{stem}_pruned.onnx'}")


if __name__ == "__main__":
    main()
