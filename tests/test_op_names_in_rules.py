"""No code outside the op rules and the ONNX importer names an activation op as a string.

What an engine needs to know about an op is a field of its rule (``bounds/registry.py``): a
``node.op == "Relu"`` elsewhere is op knowledge kept outside the rule, which a new op silently
misses. Activation ops are the registered ops whose rule is elementwise and not affine. The
files scanned are the packages' Python sources (verifier/, bounds/, server/) except the rules
themselves (bounds/rules/) and the importer (verifier/onnx_import/), which maps ONNX op names.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from bounds.registry import rules

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("verifier", "bounds", "server")
EXEMPT = ("bounds/rules/", "verifier/onnx_import/")

# Known hits: (file, op) -> how many lines name it. To be removed in phase 2 (issue 20): each
# wants a rule field instead (see the session 8 report). New hits fail; fixed ones must leave.
ALLOWED: dict[tuple[str, str], int] = {
    # Relu search: ReluLayer.op default / is_relu / relu_layers -> rule.split.search == "sign"
    ("verifier/bab/branching.py", "Relu"): 3,
    # graph rewrites: Clip(0, inf) -> Relu, x Phi(x) via Erf -> Gelu (pattern matching on ops)
    ("verifier/ir/passes.py", "Clip"): 1,
    ("verifier/ir/passes.py", "Relu"): 1,
    ("verifier/ir/passes.py", "Erf"): 1,
    ("verifier/ir/passes.py", "Gelu"): 1,
}


def activation_ops() -> set[str]:
    return {op for op, rule in rules().items()
            if rule.traits.elementwise and not rule.traits.affine}


def find_hits() -> Counter:
    """(file, op) -> number of lines that name ``op`` as a quoted string."""
    names = "|".join(sorted(activation_ops()))
    pattern = re.compile(r"""["'](""" + names + r""")["']""")
    hits: Counter = Counter()
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(EXEMPT):
                continue
            for line in path.read_text().splitlines():
                for op in set(pattern.findall(line)):
                    hits[(rel, op)] += 1
    return hits


def test_activation_names_only_in_rules():
    hits = find_hits()
    new = {k: n for k, n in hits.items() if n > ALLOWED.get(k, 0)}
    assert not new, ("op knowledge outside the rules (use a rule field instead): "
                     + ", ".join(f"{f}: {op!r} x{n}" for (f, op), n in sorted(new.items())))


def test_allowlist_is_not_stale():
    hits = find_hits()
    stale = {k: n for k, n in ALLOWED.items() if hits.get(k, 0) < n}
    assert not stale, f"ALLOWED lists hits that are gone: lower or drop {sorted(stale)}"
