"""Cases of the unusual-model campaign: a random model (unusual_nets.py) and a random property
(unusual_specs.py), deterministic in ``(seed, index)``, and their files on disk."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fuzzing.specs import PropSpec, to_vnnlib
from fuzzing.unusual_nets import (
    LARGE_SHARE,
    UnusualNet,
    random_unusual_net,
    random_upsample_net,
)
from fuzzing.unusual_specs import (
    GZIP_SHARE,
    SPEC_WEIGHTS,
    UNUSUAL_SPEC_KINDS,
    random_unusual_parts,
    regions_vnnlib,
)

UPSAMPLE_SHARE = 0.05  # opset-9 models with Upsample


@dataclass(frozen=True)
class UnusualCase:
    seed: int
    index: int
    net: UnusualNet
    parts: tuple[PropSpec, ...]  # one box each, with its condition (violated if any part is)
    kind: str
    placement: str  # robust | easy | beyond | beyond+one (see unusual_specs.py)
    gz: bool
    vnnlib: str

    @property
    def case_id(self) -> str:
        return f"{self.seed}:{self.index}"

    @property
    def spec_kind(self) -> str:
        return self.kind

    @property
    def n_disjuncts(self) -> int:
        return max(int(p.coef.shape[0]) for p in self.parts)


def make_unusual_case(seed: int, index: int, kind: str | None = None,
                      blocks: tuple[str, ...] = (), large_share: float = LARGE_SHARE
                      ) -> UnusualCase:
    """The case ``(seed, index)``; ``kind``/``blocks`` force the spec kind / model blocks,
    ``large_share`` the share of larger models (the default keeps case ids stable)."""
    rng = np.random.default_rng([seed, index, 16])
    if not blocks and rng.random() < UPSAMPLE_SHARE:
        net = random_upsample_net(rng)
    else:
        net = random_unusual_net(rng, blocks, large_share)
    kind = kind or str(rng.choice(UNUSUAL_SPEC_KINDS, p=SPEC_WEIGHTS))
    parts, placement = random_unusual_parts(kind, net.onnx_bytes, net.input_shape, net.n_out,
                                            rng)
    gz = bool(rng.random() < GZIP_SHARE[kind])
    comment = (f"nncert unusual-model campaign case {seed}:{index}\nmodel: {net.arch}\n"
               f"spec: {kind} ({placement}), {len(parts)} box(es), "
               f"{max(p.coef.shape[0] for p in parts)} disjunct(s)")
    if kind == "regions":
        text = regions_vnnlib(parts, net.n_in, net.n_out, comment)
    else:  # one shared condition: the boxes as one disjunction
        shared = replace(parts[0], boxes=tuple(p.boxes[0] for p in parts))
        text = to_vnnlib(shared, net.n_in, net.n_out, comment)
    return UnusualCase(seed, index, net, parts, kind, placement, gz, text)


def write_case(case: UnusualCase, folder: Path) -> tuple[Path, Path]:
    """model.onnx and spec.vnnlib[.gz] in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.onnx"
    model.write_bytes(case.net.onnx_bytes)
    if case.gz:
        spec = folder / "spec.vnnlib.gz"
        spec.write_bytes(gzip.compress(case.vnnlib.encode(), mtime=0))
    else:
        spec = folder / "spec.vnnlib"
        spec.write_text(case.vnnlib)
    return model, spec
