"""No code outside the op rules and the ONNX importer names an activation op as a string.

What an engine needs to know about an op is a field of its rule (``bounds/registry.py``): a
``node.op == "Relu"`` elsewhere is op knowledge kept outside the rule, which a new op silently
misses. Activation ops are the registered ops whose rule is elementwise and not affine. The
files scanned are the packages' Python sources (verifier/, bounds/, server/) except the rules
themselves (bounds/rules/) and the importer, which maps ONNX op names: verifier/onnx_import/ and
verifier/ir/ (graph rewrites such as Clip(0, inf) -> Relu, which only the ONNX loader runs).
An op name as the first argument of ``helper.make_node(`` writes an ONNX node (the composed
product models, the gate's casts) and decides nothing about an op, so it is not a hit.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from bounds.registry import rules

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("verifier", "bounds", "server")
# verifier/ir/ is part of the importer: its passes pattern-match ops by name on the graphs the
# ONNX loader builds, and run nowhere else.
EXEMPT = ("bounds/rules/", "verifier/onnx_import/", "verifier/ir/")

# Known hits: (file, op) -> how many lines name it; new hits fail, fixed ones must leave.
# Empty: every op fact outside the rules is read from a rule field.
ALLOWED: dict[tuple[str, str], int] = {}


def activation_ops() -> set[str]:
    return {op for op, rule in rules().items()
            if rule.traits.elementwise and not rule.traits.affine}


def find_hits() -> Counter:
    """(file, op) -> number of lines that name ``op`` as a quoted string."""
    names = "|".join(sorted(activation_ops()))
    pattern = re.compile(r"""(?<!make_node\()["'](""" + names + r""")["']""")
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
