"""A neuron-split search that stops with seconds left (its next step would not fit) leaves them
to a last attack instead of ending the run early with ``timeout``."""

from __future__ import annotations

import time

import numpy as np


def test_a_search_stopping_early_leaves_its_time_to_a_last_attack(monkeypatch):
    import verifier.bab.neuron_split as neuron_split
    import verifier.strategy as strategy
    from tests.milp.nets import make_spec, onnx_mlp, random_layers
    from verifier.bab.input_split import BabOutcome
    from verifier.config import VerifyConfig

    layers = random_layers([40, 12, 12, 2], np.random.default_rng(0))
    model = onnx_mlp([(w.astype(np.float32).astype(np.float64), b) for w, b in layers])
    # a property no bound settles over a wide box (nor finds: the attacks are stubbed), on 40
    # inputs (neuron splits, not input splits): the search must run
    spec = make_spec([(np.full(40, -3.0), np.full(40, 3.0))], [[[1.0, -1.0]]], [[0.0]])
    attacks = []

    def recorded_attack(runner, deadline, budget_s):
        attacks.append((deadline - time.monotonic(), budget_s))
        return None

    def stops_at_once(self):
        return BabOutcome("timeout", stats={"stopped": "no step fits"})

    monkeypatch.setattr(strategy, "_attack", recorded_attack)
    monkeypatch.setattr(neuron_split.NeuronSplitSearch, "run", stops_at_once)
    config = VerifyConfig(timeout=20, method="bab")
    result = strategy.run_methods(model, spec, config, "cpu", time.monotonic() + 20)
    assert result.verdict == "unknown" and "stopped with time left" in result.message, result
    assert attacks and attacks[-1][1] > 10  # the last attack got the seconds left
