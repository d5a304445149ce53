"""``--report DIR``: an HTML page and PNG plots (matplotlib, optional at run time).

* gate: ``outcomes.png``: left, the count of each outcome; right, one bar per sample whose
  height is its verification time and whose colour is its outcome.
* radius: ``certified_accuracy.png``: the fraction of samples with ``certified_eps >= eps``
  (a lower bound on robust accuracy at eps) and ``1 - fraction falsified at <= eps`` (an upper
  bound), the band between them undecided; ``radius_brackets.png``: per sample, the proved
  radius (green bar) and the smallest falsified radius (red marker).

Each page is ``index.html`` beside the PNGs (relative links; no external assets).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from verifier.errors import NncertError

COLOURS = {"certified": "#2e7d32", "falsified": "#c62828", "unknown": "#f9a825",
           "timeout": "#6d4c41", "error": "#6a1b9a"}


def require_matplotlib():
    """The ``matplotlib.pyplot`` module on the Agg backend, or NncertError (exit 2)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NncertError("--report needs matplotlib: pip install matplotlib "
                          "(or install nncert with its 'report' extra)") from None
    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)


def gate_outcome_plot(summary, path: Path) -> None:
    """Outcome counts and per-sample bars (time, coloured by outcome)."""
    from verifier.gate.gate import OUTCOMES

    plt = require_matplotlib()
    counts = summary.counts
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4),
                                   gridspec_kw={"width_ratios": [1, 2.2]})
    ax1.bar(OUTCOMES, [counts[o] for o in OUTCOMES], color=[COLOURS[o] for o in OUTCOMES])
    ax1.set_ylabel("samples")
    ax1.yaxis.get_major_locator().set_params(integer=True)
    ax1.set_title(f"outcomes at eps {summary.ball.eps:g} "
                  f"(certified {100 * summary.certified_accuracy:.1f}%)")
    ax1.tick_params(axis="x", rotation=30)
    samples = summary.samples
    xs = np.arange(len(samples))
    ax2.bar(xs, [max(s.time_s, 1e-3) for s in samples],
            color=[COLOURS[s.outcome] for s in samples])
    ax2.set_xlabel("sample")
    ax2.set_ylabel("verification time (s)")
    ax2.set_title("per-sample outcome (colour) and time")
    if len(samples) <= 40:
        ax2.set_xticks(xs, [s.name for s in samples], rotation=60, fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[o]) for o in OUTCOMES if counts[o]]
    ax2.legend(handles, [o for o in OUTCOMES if counts[o]], loc="upper right", fontsize=8)
    _save(fig, path)


def accuracy_curves(results, max_eps: float, points: int = 400):
    """(eps grid, lower, upper): certified fraction and 1 - falsified fraction at each eps."""
    cert = np.array([-np.inf if r.certified_eps is None else r.certified_eps for r in results])
    fals = np.array([np.inf if r.falsified_eps is None else r.falsified_eps for r in results])
    marks = [v for v in np.concatenate([cert, fals]) if 0 <= v <= max_eps]
    grid = np.unique(np.concatenate([np.linspace(0, max_eps, points), marks]))
    lower = (cert[None, :] >= grid[:, None]).mean(axis=1)
    upper = 1.0 - (fals[None, :] <= grid[:, None]).mean(axis=1)
    return grid, lower, upper


def radius_plots(results, max_eps: float, out: Path) -> list[str]:
    """Write the accuracy curve and the per-sample brackets; the PNG file names."""
    plt = require_matplotlib()
    grid, lower, upper = accuracy_curves(results, max_eps)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.fill_between(grid, lower, upper, step="post", color="#bbbbbb", alpha=0.5,
                    label="undecided")
    ax.step(grid, upper, where="post", color=COLOURS["falsified"],
            label="upper bound: 1 - falsified at <= eps")
    ax.step(grid, lower, where="post", color=COLOURS["certified"], linewidth=2,
            label="certified accuracy (certified_eps >= eps)")
    ax.set_xlim(0, max_eps)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("eps (L-inf radius)")
    ax.set_ylabel("fraction of samples")
    ax.set_title(f"certified accuracy vs eps ({len(results)} samples)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, out / "certified_accuracy.png")

    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.35 * max(len(results), 3)))
    ys = np.arange(len(results))
    certs = [r.certified_eps or 0.0 for r in results]
    ax.barh(ys, certs, color=COLOURS["certified"], label="proved robust")
    fx = [(y, r.falsified_eps) for y, r in zip(ys, results, strict=True)
          if r.falsified_eps is not None]
    if fx:
        ax.scatter([f for _, f in fx], [y for y, _ in fx], marker="x", s=50,
                   color=COLOURS["falsified"], label="smallest falsified eps", zorder=3)
    ax.set_yticks(ys, [f"{r.name} ({r.status})" for r in results], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max_eps * 1.02)
    ax.set_xlabel("eps (L-inf radius)")
    ax.set_title("per-sample radius brackets")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, out / "radius_brackets.png")
    return ["certified_accuracy.png", "radius_brackets.png"]


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
.pass{{color:#2e7d32}}.fail{{color:#c62828}}img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_gate_report(summary, out_dir: str | Path) -> Path:
    """``index.html`` and ``outcomes.png`` in ``out_dir``; the page's path."""
    from verifier.gate.gate import OUTCOMES

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gate_outcome_plot(summary, out / "outcomes.png")
    verdict = ("<p class=pass><b>GATE PASSED</b></p>" if summary.passed else
               "<p class=fail><b>GATE FAILED</b>: "
               + html.escape("; ".join(summary.failures())) + "</p>")
    b, c = summary.ball, summary.counts
    eq = summary.equivalence
    versus = ("" if eq is None else f" against reference <code>{html.escape(eq.reference)}"
              f"</code> ({html.escape(eq.describe())})")
    body = (f"<p>model <code>{html.escape(summary.model)}</code>{versus}, data "
            f"<code>{html.escape(summary.data)}</code>, eps {b.eps:g} (L-{b.norm}"
            + (f", clip {b.clip[0]:g},{b.clip[1]:g}" if b.clip else "") + "), "
            f"{len(summary.samples)} samples, certified accuracy "
            f"{100 * summary.certified_accuracy:.2f}%, total time "
            f"{summary.total_time_s:.2f} s</p>{verdict}"
            + _table(["outcome", "count"], [[o, c[o]] for o in OUTCOMES])
            + '<h2>Per sample</h2><img src="outcomes.png" alt="per-sample outcomes">'
            + _table(["sample", "label", "outcome", "predicted", "time (s)", "method"],
                     [[s.name, s.label, s.outcome, "" if s.predicted is None else s.predicted,
                       f"{s.time_s:.2f}", s.method] for s in summary.samples]))
    page = out / "index.html"
    page.write_text(_PAGE.format(title="nncert gate report", body=body))
    return page


def write_radius_report(results, max_eps: float, out_dir: str | Path) -> Path:
    """``index.html``, ``certified_accuracy.png`` and ``radius_brackets.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = radius_plots(results, max_eps, out)
    imgs = "".join(f'<img src="{n}" alt="{n[:-4]}"><br>' for n in names)

    def num(v):
        return "-" if v is None else f"{v:.6g}"

    body = (f"<p>{len(results)} samples, radii searched in [0, {max_eps:g}]</p>{imgs}"
            + _table(["sample", "label", "certified eps", "falsified eps", "status",
                      "time (s)"],
                     [[r.name, r.label, num(r.certified_eps), num(r.falsified_eps), r.status,
                       f"{r.time_s:.2f}"] for r in results]))
    page = out / "index.html"
    page.write_text(_PAGE.format(title="nncert radius report", body=body))
    return page
