"""``nncert verify`` on generated instances, each in its own process, per tree side by side
(the current checkout and an optional baseline), with counts and seconds per model: the
runner of ``sklearn_models`` and ``step_models``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path


def argmax_spec(center, radius: float, label: int, classes: int, low: float | None = None,
                high: float | None = None) -> str:
    """VNN-LIB: label ``label`` of ``classes`` outputs stays the argmax over the L_inf ball of
    ``radius`` around ``center`` (a numpy array), clipped to [low, high] where given."""
    flat = center.reshape(-1).tolist()
    lines = [f"(declare-const X_{i} Real)" for i in range(len(flat))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, v in enumerate(flat):
        lo = v - radius if low is None else max(low, v - radius)
        hi = v + radius if high is None else min(high, v + radius)
        lines.append(f"(assert (>= X_{i} {lo!r}))")
        lines.append(f"(assert (<= X_{i} {hi!r}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def train_classifier(module, x, labels, steps: int) -> None:
    """``steps`` Adam steps (lr 1e-3, batches of 32, seed 7) of cross-entropy on (x, labels)
    (numpy arrays), then eval mode: the generated models' short training."""
    import torch

    torch.manual_seed(7)
    data, target = torch.as_tensor(x), torch.as_tensor(labels)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    for _ in range(steps):
        batch = torch.randint(0, len(data), (32,))
        loss = torch.nn.functional.cross_entropy(module(data[batch]), target[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()


#: ``--exporter dynamo``: every family by torch.onnx's dynamo exporter (the default since torch
#: 2.9) at opset 18
DYNAMO_EXPORT = {"opset_version": 18, "dynamo": True}


def build_families(families: list[str], folder: Path, prefix: str, make, steps: int,
                   classes: int, exports: dict, exporter: str = "default"
                   ) -> list[tuple[str, Path, Path]]:
    """Each family made (``make(family, rng)`` -> module, inputs, labels, radii, input
    bounds; torch and numpy seeded 7 first), trained ``steps`` steps, exported to
    ``folder``/``prefix``_family.onnx with its specs: as ``exports[family]`` (its
    torch.onnx.export arguments), or ``DYNAMO_EXPORT`` for every family with ``exporter``
    "dynamo"."""
    import numpy as np
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    instances = []
    for family in families:
        torch.manual_seed(7)
        module, x, labels, radii, bounds = make(family, np.random.default_rng(7))
        train_classifier(module, x, labels, steps)
        name = f"{prefix}_{family}"
        export = DYNAMO_EXPORT if exporter == "dynamo" else exports[family]
        instances += export_instances(name, module, x, folder / f"{name}.onnx", export,
                                      radii, classes, bounds)
    return instances


def export_instances(name: str, module, x, onnx_path: Path, export: dict, radii,
                     classes: int, bounds: tuple = (None, None)) -> list[tuple[str, Path, Path]]:
    """``module`` exported by torch.onnx (``export``: its keyword arguments) to ``onnx_path``,
    and an argmax spec (``argmax_spec``, clipped to ``bounds``) at points 3 and 50 of ``x`` for
    each radius: (name, onnx, vnnlib) per instance."""
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        torch.onnx.export(module, (torch.as_tensor(x[:1]),), str(onnx_path),
                          input_names=["x"], **export, output_names=["logits"])
    session = ort.InferenceSession(str(onnx_path))
    instances = []
    for k in (3, 50):
        scores = session.run(None, {"x": x[k:k + 1]})[0].reshape(-1)
        for radius in radii:
            spec = onnx_path.parent / f"{onnx_path.stem}_{k}_{radius}.vnnlib"
            spec.write_text(argmax_spec(x[k], radius, int(scores.argmax()), classes, *bounds))
            instances.append((name, onnx_path, spec))
    return instances


_SCHEMAS = []  # the op libraries declared for a torchvision without its C++ ops, kept alive


def import_torchvision():
    """``torchvision`` imported (transformers imports it too, where installed). A wheel built
    for CUDA torch imports on CPU torch only without its C++ ops, and torchvision 0.28 then
    stops at registering fake kernels for ``nms``/``qnms``: those two ops' schemas are declared
    (no kernels) and the import is tried again; the models used here need none of its ops."""
    import torch

    try:
        import torchvision
        return torchvision
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    library = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _SCHEMAS.append(library)
    import torchvision
    return torchvision


def run(python: str, tree: str | None, onnx_path: Path, spec: Path, timeout: float
        ) -> tuple[str, float]:
    """(verdict, wall seconds) of one ``verify`` with PYTHONPATH=``tree`` (None: as is)."""
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree
    start = time.perf_counter()
    try:
        out = subprocess.run([python, "-m", "verifier.cli", "verify", str(onnx_path),
                              str(spec), "--timeout", str(timeout)], capture_output=True,
                             text=True, env=env, timeout=timeout + 60, cwd="/")
        lines = out.stdout.strip().splitlines()
        verdict = lines[0].split()[0] if lines else f"error(rc={out.returncode})"
    except subprocess.TimeoutExpired:
        verdict = "killed"
    return verdict, time.perf_counter() - start


def run_instances(instances: list[tuple[str, Path, Path]], python: str, compare: str | None,
                  timeout: float) -> None:
    """Each (model name, onnx, vnnlib) on the current tree, then on ``compare``; one line per
    instance, then the verdict counts and seconds per model and tree."""
    here = str(Path(__file__).resolve().parents[1])
    trees = [("current", here)] + ([("baseline", compare)] if compare else [])
    totals: dict[tuple[str, str], Counter] = {}
    seconds: Counter = Counter()
    for name, onnx_path, spec in instances:
        cells = []
        for label, tree in trees:
            verdict, took = run(python, tree, onnx_path, spec, timeout)
            totals.setdefault((name, label), Counter())[verdict] += 1
            seconds[(name, label)] += took
            cells.append(f"{label} {verdict} {took:.1f}s")
        print(f"{spec.name}: " + " | ".join(cells), flush=True)
    for (name, label), counts in totals.items():
        print(f"{name} [{label}]: {dict(counts)} in {seconds[(name, label)]:.0f} s")


def _first_per_model(instances: list, n: int) -> list:
    """The first ``n`` instances of each model, in order."""
    kept, seen = [], Counter()
    for instance in instances:
        seen[instance[0]] += 1
        if seen[instance[0]] <= n:
            kept.append(instance)
    return kept


def main(description: str, families: list[str], default_dir: str,
         build: Callable[..., list[tuple[str, Path, Path]]],
         default: list[str] | None = None, exporters: bool = False) -> None:
    """The command line of a generated-instance benchmark: ``--families`` (of ``families``),
    ``--timeout``, ``--dir`` (where ``build(families, dir)`` writes the instances),
    ``--first`` (each model's first N instances only), ``--compare`` (a baseline checkout) and
    ``--nncert-python``; ``default``: the families run when none is named (all by default).
    ``exporters``: also ``--exporter {default,dynamo}``, passed to ``build`` as ``exporter``
    (``dynamo``: ``default_dir`` + ``-dynamo`` unless ``--dir`` is given)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--families", nargs="*", default=default or families, choices=families)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--dir", type=Path, default=None, help=f"default {default_dir}")
    parser.add_argument("--first", type=int, default=None,
                        help="each model's first N instances only (build order)")
    parser.add_argument("--compare", default=None, help="a baseline checkout (PYTHONPATH)")
    parser.add_argument("--nncert-python", default=sys.executable)
    if exporters:
        parser.add_argument("--exporter", choices=("default", "dynamo"), default="default",
                            help="dynamo: every family by torch.onnx.export(dynamo=True) at "
                                 "opset 18")
    args = parser.parse_args()
    exporter = getattr(args, "exporter", "default")
    folder = args.dir or Path(default_dir + ("-dynamo" if exporter == "dynamo" else ""))
    instances = build(args.families, folder, **({"exporter": exporter} if exporters else {}))
    if args.first is not None:
        instances = _first_per_model(instances, args.first)
    run_instances(instances, args.nncert_python, args.compare, args.timeout)
