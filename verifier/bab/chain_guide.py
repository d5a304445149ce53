"""The pair loop's optimisation passes on a fully connected Relu chain, in a few tensor ops.

On nets like mnistfc 256x4 (narrowed to its live Relus: widths 10-72) the engine's general
``backward_bound`` spent ~10 ms a pass on per-node work (rules, relaxations, chunk timing,
dtype checks) around ~1 ms of matrix products; the pair loop runs ~20 such passes a step. On a
graph that is exactly input -> reshapes -> Linear -> Relu -> ... -> Linear (each value read by
the next node only) the same bound is, per pair (coefficients a [P, out] of the last Linear):

    a . b_L - |a| . delta_L, a <- a W_L; then at each Relu (input z in [l, u], split code c):
    a <- a+ * low + a- * up_slope + beta * (-c), total += a- . up_offset, with low = alpha on
    unstable neurons (1 / 0 on active / inactive ones) and the rule's own upper plane
    (``bounds.rules.relu.upper_plane``); then the Linear before it likewise; at the input,
    a+ . lo + a- . hi over the box.

These are the engine's steps for these ops (``bounds.engine.crown``: planes, the split terms as
``extra`` coefficients, the values' rounding allowances |a| . delta), so the bounds agree with
``beta.split_bound`` to rounding (tests/bab/test_chain_guide.py). They only guide: the loop
picks its parameters with them, and every bound the search keeps as sound comes from the
engine's pass (``pair_loop._certify``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from bounds.engine.box_dot import box_lower, centre_radius, centred_bound
from bounds.engine.constants import as_tensor
from bounds.engine.results import Intermediates
from bounds.registry import rules
from bounds.rules.relu import relu_relax, upper_plane

# ops between the graph input and the first Linear that keep row-major order
_REORDER_FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


@dataclass(frozen=True)
class _Layer:
    linear: str | None  # the Linear node (its output value has the same name; None: a Relu
    # at the graph's output, ERAN's nets)
    relu: str | None  # the Relu node that feeds it (None: the first Linear)
    relu_input: str | None  # that Relu's input value (bounds, split codes, betas)
    consts: tuple = ()  # the Linear's (W, b or None) arrays
    relu_shape: tuple = ()  # the Relu's output shape


@dataclass(frozen=True)
class Chain:
    """A graph input -> Linear (-> Relu -> Linear)* (-> Relu) chain (``linear_chain``)."""

    # (no reference to the graph: the memo below must not keep graphs alive)
    input_name: str
    input_shape: tuple
    start: str  # the last Linear: the value the spec rows read
    layers: tuple[_Layer, ...]
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def weights(self, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(W, b) per layer in ``dtype`` (memoised: a lookup per pass cost 0.7 ms)."""
        key = (str(device), dtype)
        if key not in self.memo:
            self.memo[key] = self._weights(device, dtype)
        return self.memo[key]

    def _weights(self, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        out = []
        for lay in self.layers:
            if lay.linear is None:
                out.append((None, None))
                continue
            weight, bias = lay.consts
            out.append((as_tensor(weight, device, dtype),
                        None if bias is None else as_tensor(bias, device, dtype)))
        return out


_CHAINS: dict[int, tuple[weakref.ref, Chain | None]] = {}


def linear_chain(graph) -> Chain | None:
    """The graph as a Linear/Relu chain (memoised per graph), or None when it is not one."""
    key = id(graph)
    entry = _CHAINS.get(key)
    if entry is not None and entry[0]() is graph:
        return entry[1]
    chain = _build(graph)
    # the entry goes with the graph (the chain holds its weights' arrays and tensors)
    _CHAINS[key] = (weakref.ref(graph, lambda _, k=key: _CHAINS.pop(k, None)), chain)
    return chain


def _relaxed_as_relu(op: str) -> bool:
    """The op's rule relaxes it with ``relu_relax``, whose planes the chain's passes apply."""
    rule = rules().get(op)
    return rule is not None and rule.relax is relu_relax


def _build(graph) -> Chain | None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return None
    prev, layers, relu = graph.inputs[0].name, [], None
    seen_linear = False
    for node in graph.nodes:
        if len(node.dynamic_inputs) != 1 or node.dynamic_inputs[0] != prev \
                or node.inputs[0] != prev:
            return None
        if node.op in _REORDER_FREE and not seen_linear:
            pass
        elif node.op == "Linear" and 1 in node.consts and node.consts[1].ndim == 2 \
                and (relu is not None or not layers) and len(node.inputs) <= 3:
            layers.append(_Layer(node.name, relu, None if relu is None
                                 else graph.node(relu).inputs[0],
                                 (node.consts[1], node.consts.get(2)),
                                 () if relu is None else tuple(graph.shape_of(relu))))
            relu, seen_linear = None, True
        elif _relaxed_as_relu(node.op) and seen_linear and relu is None:
            relu = node.name
        else:
            return None
        prev = node.name
    if relu is not None:  # the output is a Relu's
        layers.append(_Layer(None, relu, graph.node(relu).inputs[0], (),
                             tuple(graph.shape_of(relu))))
    if not layers or graph.outputs[0].name != prev:
        return None
    if any(len(graph.consumers(n.name)) != 1 for n in graph.nodes[:-1]):
        return None
    first = graph.inputs[0]
    return Chain(first.name, tuple(first.shape), prev, tuple(layers))


@dataclass(frozen=True)
class ChainState:
    """What the passes over one batch of pairs share: the Relus' fixed planes and the
    values' allowances, flattened to [P, width]."""

    planes: tuple  # per layer: (unstable, fixed low slope, up slope, up offset) or None
    deltas: tuple  # per layer: the Linear output's allowance [P, out] or None
    # the input box: (lower, upper) [P, d], or (centre, radius) [d] when every pair has the
    # same box (a neuron-split search's region): then a . x >= a . c - |a| . r costs two
    # matrix-vector products instead of four passes over [P, d] (and their gradients)
    box: tuple[torch.Tensor, torch.Tensor]
    shared: bool = False

    def select(self, mask: torch.Tensor) -> ChainState:
        def pick(t):
            return None if t is None else t[mask]

        return ChainState(tuple(None if p is None else tuple(t[mask] for t in p)
                                for p in self.planes),
                          tuple(pick(d) for d in self.deltas),
                          self.box if self.shared else (self.box[0][mask], self.box[1][mask]),
                          self.shared)


def chain_state(chain: Chain, inter: Intermediates) -> ChainState:
    """The planes and allowances of the pairs of ``inter`` (a batch of B, one per pair)."""
    b = inter.batch

    def flat(t):
        return None if t is None else t.reshape(b, -1) if t.shape[0] == b \
            else t.reshape(1, -1).expand(b, -1)

    planes, deltas = [], []
    for lay in chain.layers:
        deltas.append(None if lay.linear is None else flat(inter.deltas.get(lay.linear)))
        if lay.relu is None:
            planes.append(None)
            continue
        x = inter.bounds[lay.relu_input]
        lower, upper = flat(x.lower), flat(x.upper)
        unstable, up_slope, up_offset = upper_plane(lower, upper)
        planes.append((unstable, (lower >= 0).to(lower.dtype), up_slope, up_offset))
    box = inter.bounds.get(chain.input_name, inter.box)  # (the engine's choice)
    lo, hi = flat(box.lower), flat(box.upper)
    if bool((lo == lo[:1]).all()) and bool((hi == hi[:1]).all()) \
            and bool(torch.isfinite(lo[0]).all()) and bool(torch.isfinite(hi[0]).all()):
        return ChainState(tuple(planes), tuple(deltas), centre_radius(lo[0], hi[0]), True)
    return ChainState(tuple(planes), tuple(deltas), (lo, hi))


def chain_coefs(chain: Chain, state: ChainState, coef: torch.Tensor, alphas: dict,
                betas: dict, terms: dict) -> tuple[dict, torch.Tensor]:
    """``branching.layer_output_coefs`` on a chain: the coefficients [B, S, *shape] reaching
    each Relu's output and those [B, S, *input shape] reaching the input."""
    kept: dict = {}
    chain_bound(chain, state, coef, alphas, betas, terms, kept)
    b, s = coef.shape[0], coef.shape[1]
    coefs = {lay.relu: kept[lay.relu].reshape(b, s, *lay.relu_shape)
             for lay in chain.layers if lay.relu is not None}
    return coefs, kept[None].reshape(b, s, *chain.input_shape)


def chain_bound(chain: Chain, state: ChainState, coef: torch.Tensor, alphas: dict,
                betas: dict, terms: dict, kept: dict | None = None) -> torch.Tensor:
    """Lower bounds [B, S] of coef [B, S, *out] . value(chain.start) with the Relus' alphas
    [B, S, *shape] (per Relu node), the split terms' betas [B, S, *shape] (per Relu input
    value; ``terms`` as ``beta.split_terms``: Relu codes only) -- ``beta.split_bound``'s
    bound on a chain (``state``: of the B domains). ``kept`` receives the coefficients
    [B, S, width] reaching each Relu's output (by node) and the input (key None)."""
    b, s = coef.shape[:2]
    a = coef.reshape(b, s, -1)
    total = torch.zeros((b, s), dtype=a.dtype, device=a.device)
    weights = chain.weights(a.device, a.dtype)
    for lay, (w, bias), planes, delta in zip(reversed(chain.layers), reversed(weights),
                                             reversed(state.planes), reversed(state.deltas),
                                             strict=True):
        if bias is not None:
            total = total + a @ bias
        if delta is not None:
            total = total - (a.abs() * delta.unsqueeze(1)).sum(-1)
        if w is not None:
            a = a @ w
        if planes is None:
            break
        if kept is not None:
            kept[lay.relu] = a
        unstable, fixed, up_slope, up_offset = (t.unsqueeze(1) for t in planes)
        alpha = alphas.get(lay.relu)
        low = fixed if alpha is None \
            else torch.where(unstable, alpha.reshape(b, s, -1), fixed)
        neg = a.clamp(max=0)
        total = total + (neg * up_offset).sum(-1)
        a = torch.addcmul(a * low, neg, up_slope - low)
        beta = betas.get(lay.relu_input)
        if beta is not None:
            a = a + beta.reshape(b, s, -1) * terms[lay.relu_input][1].reshape(b, 1, -1)
    if kept is not None:
        kept[None] = a
    if state.shared:
        return total + centred_bound(a, *state.box)
    return total + box_lower(a, *state.box)


def usable(chain: Chain | None, inter: Intermediates, start: str, alphas: dict,
           terms: dict) -> bool:
    """Whether :func:`chain_bound` computes this pass: a chain ending at ``start``, alphas
    of its Relus only (dense), split terms of Relu codes only on its Relu inputs."""
    if chain is None or linear_chain(inter.graph) is not chain or chain.start != start:
        return False
    relus = {lay.relu for lay in chain.layers if lay.relu}
    values = {lay.relu_input for lay in chain.layers if lay.relu_input}
    linears = {lay.linear for lay in chain.layers} | {chain.input_name}
    if any(d is not None for k, d in inter.deltas.items() if k not in linears):
        return False  # (only the Linears' allowances are applied, as the engine's steps)
    return set(alphas) <= relus and all(
        isinstance(v, torch.Tensor) for v in alphas.values()) and all(
        key in values and key == value and r is None for key, (value, _, r) in terms.items())
