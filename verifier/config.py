"""One explicit configuration object for a verification run; presets are named constructors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["auto", "attack", "incomplete", "bab", "milp"]
Device = Literal["auto", "cpu", "cuda"]


class AttackConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    restarts: int = Field(10, ge=0)
    steps: int = Field(50, ge=0)
    random_samples: int = Field(256, ge=0)
    time_share: float = Field(0.1, gt=0, le=1)


class BabConfig(BaseModel):
    """Branch-and-bound over neurons (GenBaB for general nonlinearities, beta-CROWN for Relus)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    nonlinear: bool = True  # also split Sigmoid/Tanh/Sin/GELU/... neurons (GenBaB)
    products: bool = True  # with nonlinear: also split operands of x*y products (Mul, MatMul)
    points: Literal["optimized", "midpoint"] = "optimized"  # lookup tables or midpoints
    heuristic: Literal["bbps", "width"] = "bbps"  # nonlinear neuron choice: estimate/baseline
    branching: Literal["babsr", "fsb"] = "fsb"  # top-1 by score, or filtered strong branching


class VerifyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    timeout: float = Field(300.0, gt=0)
    method: Method = "auto"
    device: Device = "auto"
    seed: int = 0
    check_model: bool = True  # differential check of the IR against onnxruntime
    # Counterexamples must lie in the real box itself (VNN-COMP 2026 mode); by default the
    # nearest float32 to a box that holds none is accepted within the checker's 1e-4.
    strict_box: bool = False
    milp_backend: Literal["auto", "highs", "gurobi"] = "auto"
    attack: AttackConfig = AttackConfig()
    bab: BabConfig = BabConfig()

    @classmethod
    def quick(cls, timeout: float = 30.0) -> VerifyConfig:
        return cls(timeout=timeout)
