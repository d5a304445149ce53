"""Op rules, one module per op family. Registered explicitly through ALL_RULE_MODULES."""

from bounds.rules import (
    arithmetic,
    discrete,
    dynamic_slice,
    elu,
    exp_log,
    gelu,
    linear,
    logic,
    periodic,
    piecewise,
    pooling,
    relu,
    s_shaped,
    shape,
    softmax,
    softplus,
)

ALL_RULE_MODULES = (
    linear,
    arithmetic,
    shape,
    pooling,
    relu,
    piecewise,
    s_shaped,
    periodic,
    gelu,
    exp_log,
    softplus,
    elu,
    softmax,
    logic,
    discrete,
    dynamic_slice,
)
