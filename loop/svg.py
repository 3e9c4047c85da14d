"""Hand-written inline SVG charts for the HTML report (no plotting library, no network).

Each function returns one ``<svg>`` element as a string, sized in CSS pixels, with its own
title, axes and legend, so the report is one self-contained file.
"""
from __future__ import annotations

import math
from html import escape

TARGETED, CONTROL, BASE = "#1f6fb4", "#e07b00", "#666666"
# categories (macro tags): none of them is the targeted blue or the control orange
PALETTE = ("#2ca02c", "#9467bd", "#17becf", "#d62728", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f",
           "#393b79", "#ad494a", "#6b6ecf", "#8ca252")
FONT = 'font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif"'


def _t(x: float, y: float, text: str, size: int = 11, anchor: str = "start", color: str = "#222",
       weight: str = "normal", rotate: float | None = None) -> str:
    rot = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}" '
            f'font-weight="{weight}"{rot}>{escape(text)}</text>')


def _svg(w: int, h: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'role="img" aria-label="{escape(label)}" {FONT}><rect width="{w}" height="{h}" fill="#ffffff"/>'
            + "".join(body) + "</svg>")


def _fmt(step: float) -> str:
    """A tick label format with as many decimals as the tick step needs (0.25 -> 2, 0.1 -> 1)."""
    return "{:.%df}" % next((d for d in range(4) if abs(round(step, d) - step) < 1e-9), 3)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n)) if span > 0 else 0.1
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step - 1e-9) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


def score_range(values: list[float]) -> tuple[float, float]:
    """A y range for accuracies: the data with a margin, at least 0.2 wide, inside [0, 1]."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    lo, hi = max(0.0, lo - 0.05), min(1.0, hi + 0.05)
    if hi - lo < 0.2:
        mid = (hi + lo) / 2
        lo, hi = max(0.0, mid - 0.1), min(1.0, max(0.0, mid - 0.1) + 0.2)
        lo = min(lo, hi - 0.2)
    return lo, hi


def line_panel(title: str, labels: list[str], series: list[dict], ylim: tuple[float, float],
               base: float | None = None, w: int = 280, h: int = 210) -> str:
    """One small multiple: x = students (``labels``), y = score. Each series: ``name``, ``color``,
    ``dash`` (bool), ``square`` (bool), ``offset``, ``hide``, ``points`` (``(y, lo, hi)`` or None per
    label; ``lo == hi`` draws no whisker).
    ``base`` draws a dotted horizontal line at the base score."""
    ml, mr, mt, mb = 40, 10, 24, 34
    pw, ph = w - ml - mr, h - mt - mb
    lo, hi = ylim
    n = max(1, len(labels))
    X = lambda i: ml + pw * (i + 0.5) / n  # noqa: E731
    Y = lambda v: mt + ph * (1 - (v - lo) / (hi - lo or 1))  # noqa: E731
    body = [_t(ml, 15, title, 12, weight="bold")]
    ticks = _ticks(lo, hi, 4)
    fmt = _fmt(ticks[1] - ticks[0] if len(ticks) > 1 else 0.1)
    for tv in ticks:
        body.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(tv):.1f}" y2="{Y(tv):.1f}" stroke="#e6e6e6"/>')
        body.append(_t(ml - 4, Y(tv) + 4, fmt.format(tv), 10, "end", "#555"))
    body.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" stroke="#999"/>')
    body.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" stroke="#999"/>')
    for i, lab in enumerate(labels):
        body.append(_t(X(i), mt + ph + 14, lab.replace("round ", "r"), 10, "middle", "#333"))
    if base is not None:
        body.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(base):.1f}" y2="{Y(base):.1f}" stroke="{BASE}" '
                    f'stroke-dasharray="2,3" stroke-width="1.2"/>')
    for s in series:
        # ``offset`` shifts a series sideways so whiskers do not hide each other; at the indices in
        # ``hide`` the line passes through the unshifted x and no marker is drawn (another series'
        # marker stands there, e.g. the base's)
        hide, off = s.get("hide", ()), s.get("offset", 0.0)
        pts = [(X(i) + (0 if i in hide else off), p, i in hide) for i, p in enumerate(s["points"]) if p is not None]
        dash = ' stroke-dasharray="5,3"' if s.get("dash") else ""
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{Y(p[0]):.1f}" for x, p, _ in pts)
            body.append(f'<polyline points="{path}" fill="none" stroke="{s["color"]}" stroke-width="2"{dash}/>')
        for x, p, hidden in pts:
            if hidden:
                continue
            if p[1] != p[2]:
                body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{Y(p[1]):.1f}" y2="{Y(p[2]):.1f}" '
                            f'stroke="{s["color"]}" stroke-width="1.5"/>')
                for v in (p[1], p[2]):
                    body.append(f'<line x1="{x - 3:.1f}" x2="{x + 3:.1f}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" '
                                f'stroke="{s["color"]}" stroke-width="1.5"/>')
            shape = (f'<rect x="{x - 4:.1f}" y="{Y(p[0]) - 4:.1f}" width="8" height="8" fill="{s["color"]}"/>'
                     if s.get("square") else f'<circle cx="{x:.1f}" cy="{Y(p[0]):.1f}" r="3.5" fill="{s["color"]}"/>')
            body.append(shape)
    return _svg(w, h, body, f"{title}: score per round")


def legend(items: list[tuple[str, str, str]], w: int = 620) -> str:
    """A one-line legend: (label, color, kind) with kind ``line``, ``dashed``, ``dotted`` or ``box``."""
    body, x = [], 8
    for label, color, kind in items:
        if kind == "box":
            body.append(f'<rect x="{x}" y="6" width="14" height="12" fill="{color}"/>')
        else:
            dash = {"dashed": ' stroke-dasharray="5,3"', "dotted": ' stroke-dasharray="2,3"'}.get(kind, "")
            body.append(f'<line x1="{x}" x2="{x + 22}" y1="12" y2="12" stroke="{color}" stroke-width="2"{dash}/>')
        body.append(_t(x + 28, 16, label, 11))
        x += 36 + 7 * len(label)
    return _svg(max(w, x), 24, body, "legend")


def _blue(v: float) -> str:
    """White (0) to dark blue (1)."""
    v = min(1.0, max(0.0, v))
    c0, c1 = (247, 251, 255), (8, 69, 148)
    r, g, b = (round(a + (z - a) * v) for a, z in zip(c0, c1))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(title: str, rows: list[str], cols: list[str], values: list[list[float | None]],
            weights: list[list[float]], cell_w: int = 104, cell_h: int = 30) -> str:
    """Rows × columns of accuracies in [0, 1], each cell coloured and labelled with its value and
    the items (or weight) behind it; empty cells are grey."""
    ml, mt, head = 70, 24, 32   # column labels wrap on two lines inside `head`
    w, h = ml + cell_w * len(cols) + 10, mt + head + cell_h * len(rows) + 30
    body = [_t(4, 16, title, 12, weight="bold")]
    for j, c in enumerate(cols):
        words, line1, line2 = c.split(), "", ""
        for word in words:
            if len(line1) + len(word) < 16 and not line2:
                line1 = f"{line1} {word}".strip()
            else:
                line2 = f"{line2} {word}".strip()
        x = ml + cell_w * (j + 0.5)
        body.append(_t(x, mt + 10, line1, 10, "middle", "#333"))
        if line2:
            body.append(_t(x, mt + 23, line2 if len(line2) <= 19 else line2[:18] + "…", 10, "middle", "#333"))
    for i, r in enumerate(rows):
        y = mt + head + cell_h * i
        body.append(_t(ml - 6, y + cell_h / 2 + 4, r, 11, "end", "#333"))
        for j, _ in enumerate(cols):
            x = ml + cell_w * j
            v, n = values[i][j], weights[i][j]
            if v is None:
                body.append(f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" fill="#eeeeee"/>')
                body.append(_t(x + cell_w / 2, y + cell_h / 2 + 4, "–", 10, "middle", "#999"))
                continue
            body.append(f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{_blue(v)}"/>')
            nn = f"{n:.0f}" if abs(n - round(n)) < 1e-6 else f"{n:.1f}"
            body.append(_t(x + cell_w / 2, y + cell_h / 2 + 4, f"{v:.2f} (n={nn})", 10, "middle",
                           "#fff" if v > 0.55 else "#111"))
    # colour scale
    y = mt + head + cell_h * len(rows) + 10
    for k in range(11):
        body.append(f'<rect x="{ml + k * 14}" y="{y}" width="14" height="10" fill="{_blue(k / 10)}"/>')
    body.append(_t(ml - 6, y + 9, "0", 10, "end", "#555"))
    body.append(_t(ml + 11 * 14 + 4, y + 9, "1 (accuracy)", 10, "start", "#555"))
    return _svg(max(w, 320, 8 + 7 * len(title)), h, body, title)


def stacked_bars(title: str, rows: list[str], segments: list[str], values: list[list[float]], unit: str,
                 colors: dict[str, str] | None = None, w: int = 640, bar_h: int = 20) -> str:
    """Horizontal bars, one per row, split into segments (e.g. stages or sources), with a legend."""
    colors = colors or {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(segments)}
    ml, mr, mt = 90, 70, 28
    leg_rows = math.ceil(len(segments) / 5)
    h = mt + (bar_h + 8) * len(rows) + 22 + 18 * leg_rows
    pw = w - ml - mr
    top = max((sum(v) for v in values), default=0) or 1
    body = [_t(4, 16, title, 12, weight="bold")]
    for i, r in enumerate(rows):
        y = mt + (bar_h + 8) * i
        body.append(_t(ml - 6, y + bar_h / 2 + 4, r, 11, "end", "#333"))
        x = ml
        for s, v in zip(segments, values[i]):
            if v <= 0:
                continue
            bw = pw * v / top
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{max(bw, 0.8):.1f}" height="{bar_h}" fill="{colors[s]}">'
                        f'<title>{escape(s)}: {v:g} {escape(unit)}</title></rect>')
            x += bw
        body.append(_t(x + 4, y + bar_h / 2 + 4, f"{sum(values[i]):,.0f} {unit}" if sum(values[i]) >= 10
                       else f"{sum(values[i]):.1f} {unit}", 10, "start", "#333"))
    y = mt + (bar_h + 8) * len(rows) + 8
    for k, s in enumerate([s for j, s in enumerate(segments) if any(v[j] > 0 for v in values)]):  # drawn ones
        x = ml + (k % 5) * ((pw + mr) / 5)
        yy = y + 18 * (k // 5)
        body.append(f'<rect x="{x:.1f}" y="{yy}" width="12" height="10" fill="{colors[s]}"/>')
        body.append(_t(x + 16, yy + 9, s, 10, "start", "#333"))
    return _svg(w, h, body, title)


def diff_plot(title: str, labels: list[str], series: list[dict], w: int = 460, h: int = 200) -> str:
    """Paired differences with CIs per round (dot and whisker), a zero line; each series: ``name``,
    ``color``, ``points`` (``(diff, lo, hi)`` or None per label)."""
    ml, mr, mt, mb = 44, 10, 24, 30
    pw, ph = w - ml - mr, h - mt - mb
    vals = [v for s in series for p in s["points"] if p for v in p] + [0.0]
    span = max(0.05, max(abs(v) for v in vals) * 1.15)
    lo, hi = -span, span
    n = max(1, len(labels))
    X = lambda i: ml + pw * (i + 0.5) / n  # noqa: E731
    Y = lambda v: mt + ph * (1 - (v - lo) / (hi - lo))  # noqa: E731
    body = [_t(ml, 15, title, 12, weight="bold")]
    ticks = _ticks(lo, hi, 4)
    fmt = _fmt(ticks[1] - ticks[0] if len(ticks) > 1 else 0.1).replace("{:", "{:+")
    for tv in ticks:
        body.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(tv):.1f}" y2="{Y(tv):.1f}" stroke="#eeeeee"/>')
        body.append(_t(ml - 4, Y(tv) + 4, fmt.format(tv), 10, "end", "#555"))
    body.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(0):.1f}" y2="{Y(0):.1f}" stroke="#444" stroke-width="1.2"/>')
    for i, lab in enumerate(labels):
        body.append(_t(X(i), mt + ph + 16, lab, 10, "middle", "#333"))
    k = len(series)
    for j, s in enumerate(series):
        off = (j - (k - 1) / 2) * 14
        for i, p in enumerate(s["points"]):
            if p is None:
                continue
            x = X(i) + off
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{Y(p[1]):.1f}" y2="{Y(p[2]):.1f}" '
                        f'stroke="{s["color"]}" stroke-width="2"/>')
            body.append(f'<circle cx="{x:.1f}" cy="{Y(p[0]):.1f}" r="4" fill="{s["color"]}"/>')
    return _svg(w, h, body, title)
