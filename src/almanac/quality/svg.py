"""Small inline SVG charts for the quality report: plain text, no plotting library, every
label and attribute escaped (`html.escape`), so a feature or category value cannot
break the page. Each chart is an `<svg>` with a class (and `data-*` attributes) that
says what it shows, so a test or a stylesheet can find it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence

PALETTE = ("#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#0c8599", "#c2255c", "#5c940d")  # fmt: skip
REFERENCE, CURRENT = "#4c6ef5", "#f76707"
_W, _H, _PAD = 340, 170, 32


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def number(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:,.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _svg(css: str, attrs: dict[str, str], width: int, height: int, body: list[str]) -> str:
    extra = "".join(f' {name}="{esc(value)}"' for name, value in attrs.items())
    return (
        f'<svg class="{esc(css)}"{extra} xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">' + "".join(body) + "</svg>"
    )


def _rect(x: float, y: float, w: float, h: float, css: str, fill: str, title: str) -> str:
    return (
        f'<rect class="{css}" x="{x:.2f}" y="{y:.2f}" width="{max(w, 0.5):.2f}" '
        f'height="{max(h, 0.0):.2f}" fill="{fill}"><title>{esc(title)}</title></rect>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", css: str = "label") -> str:
    return f'<text class="{css}" x="{x:.2f}" y="{y:.2f}" text-anchor="{anchor}">{esc(text)}</text>'


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def histogram(feature: str, edges: Sequence[float], counts: Sequence[float]) -> str:
    """Equal-width bins as columns (`edges` has one more entry than `counts`)."""
    top = max(counts, default=0) or 1
    inner_w, inner_h = _W - 2 * _PAD, _H - 2 * _PAD
    width = inner_w / max(len(counts), 1)
    body = [f'<line class="axis" x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}"/>']
    for i, count in enumerate(counts):
        h = inner_h * count / top
        title = f"[{number(edges[i])}, {number(edges[i + 1])}]: {number(int(count))}"
        body.append(_rect(_PAD + i * width + 1, _H - _PAD - h, width - 2, h, "bar", PALETTE[0], title))  # fmt: skip
    body += [
        _text(_PAD, _H - _PAD + 14, number(edges[0])),
        _text(_W - _PAD, _H - _PAD + 14, number(edges[-1]), "end"),
        _text(_PAD - 4, _PAD + 4, number(int(top)), "end"),
    ]
    return _svg("histogram", {"data-feature": feature}, _W, _H, body)


def hbars(
    css: str,
    attrs: dict[str, str],
    items: Sequence[tuple[str, float]],
    fmt: Callable[[float], str] = number,
    scale: float | None = None,
) -> str:
    """One horizontal bar per (label, value): top values, skew rates."""
    row, left = 20, 130
    height = max(len(items), 1) * row + 12
    top = scale or max((v for _, v in items), default=0) or 1
    body = []
    for i, (label, value) in enumerate(items):
        y = 6 + i * row
        w = (_W - left - 60) * value / top
        body.append(_text(left - 6, y + 13, _short(label), "end"))
        body.append(_rect(left, y + 2, w, row - 6, "bar", PALETTE[0] if value >= 0 else PALETTE[1], f"{label}: {fmt(value)}"))  # fmt: skip
        body.append(_text(left + w + 4, y + 13, fmt(value)))
    return _svg(css, attrs, _W, height, body)


def overlay(
    feature: str, labels: Sequence[str], reference: Sequence[float], current: Sequence[float],
    grouped: bool,
) -> str:  # fmt: skip
    """The reference and current shares over the same bins: overlapping columns for
    number bins (`labels` are the bin edges, one more than the shares), side by side
    for categories (`labels` are the values)."""
    top = max([*reference, *current, 0.0]) or 1.0
    inner_w, inner_h = _W - 2 * _PAD, _H - 2 * _PAD
    width = inner_w / max(len(reference), 1)
    body = [f'<line class="axis" x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}"/>']
    for i, (p, q) in enumerate(zip(reference, current, strict=True)):
        name = labels[i] if grouped else f"[{labels[i]}, {labels[i + 1]}]"
        x = _PAD + i * width
        for side, (share, color) in enumerate(((p, REFERENCE), (q, CURRENT))):
            h = inner_h * share / top
            bx, bw = (x + 1 + side * (width - 2) / 2, (width - 2) / 2) if grouped else (x + 1, width - 2)  # fmt: skip
            kind = ("reference", "current")[side]
            body.append(_rect(bx, _H - _PAD - h, bw, h, f"bar {kind}", color, f"{kind} {name}: {share:.1%}"))  # fmt: skip
    if grouped:  # the values slanted under their columns, in a taller chart
        body += [
            f'<text class="label" text-anchor="end" transform="translate({_PAD + (i + 0.5) * width:.2f},{_H - _PAD + 10}) rotate(-40)">{esc(_short(str(label), 12))}</text>'
            for i, label in enumerate(labels)
        ]
    else:
        body += [_text(_PAD, _H - _PAD + 14, labels[0]), _text(_W - _PAD, _H - _PAD + 14, labels[-1], "end")]  # fmt: skip
    body += [
        _text(_PAD - 4, _PAD + 4, f"{top:.0%}", "end"),
        _rect(_W - 150, 4, 10, 10, "key", REFERENCE, "reference"), _text(_W - 136, 13, "reference"),
        _rect(_W - 70, 4, 10, 10, "key", CURRENT, "current"), _text(_W - 56, 13, "current"),
    ]  # fmt: skip
    return _svg("overlay", {"data-feature": feature}, _W, _H + (48 if grouped else 0), body)


def lines(
    css: str,
    attrs: dict[str, str],
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    thresholds: Sequence[tuple[str, float]],
) -> str:
    """One polyline per series over the steps (a step without a value is skipped),
    with dashed horizontal lines at the thresholds. The scale is the square root, so
    that thresholds near 0 stay apart beside a large value."""
    width, height, left, bottom = 640, 240, 48, 40
    values = [v for points in series.values() for v in points if v is not None]
    highest = max([*values, *(t for _, t in thresholds), 0.0])
    top = highest * 1.05 or 1.0
    steps = max(len(x_labels), 1)
    inner_w, inner_h = width - left - 40, height - bottom - 16

    def x(i: int) -> float:
        return left + (inner_w * i / (steps - 1) if steps > 1 else inner_w / 2)

    def y(v: float) -> float:
        return 16 + inner_h * (1 - math.sqrt(max(v, 0.0) / top))

    body = [
        f'<line class="axis" x1="{left}" y1="{y(0):.2f}" x2="{left + inner_w}" y2="{y(0):.2f}"/>',
        _text(left - 4, y(0) + 4, "0", "end"),
    ]
    if all(abs(y(highest) - y(t)) > 12 for _, t in thresholds):
        body.append(_text(left - 4, y(highest) + 4, number(highest), "end"))
    for name, value in thresholds:
        body.append(
            f'<line class="threshold {esc(name)}" x1="{left}" y1="{y(value):.2f}" x2="{left + inner_w}" '
            f'y2="{y(value):.2f}" stroke-dasharray="6 4"><title>{esc(name)} {value}</title></line>'
        )
        body.append(_text(left - 4, y(value) + 4, number(value), "end"))
        body.append(_text(left + inner_w + 4, y(value) + 4, name, "start", "label threshold-label"))  # fmt: skip
    every = math.ceil(steps / 8)
    body += [_text(x(i), height - bottom + 16, label, "middle") for i, label in enumerate(x_labels) if i % every == 0]  # fmt: skip
    for n, (name, points) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        shown = [(i, v) for i, v in enumerate(points) if v is not None]
        data = ",".join("" if v is None else f"{v:.6g}" for v in points)
        coords = " ".join(f"{x(i):.2f},{y(v):.2f}" for i, v in shown)
        body.append(
            f'<polyline class="series" data-feature="{esc(name)}" data-values="{data}" '
            f'points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>'
        )
        body += [
            f'<circle cx="{x(i):.2f}" cy="{y(v):.2f}" r="2.5" fill="{color}">'
            f"<title>{esc(name)} {esc(x_labels[i])}: {v:.4g}</title></circle>"
            for i, v in shown
        ]
        body.append(_rect(left + 10 + n * 110, height - 14, 10, 10, "key", color, name))
        body.append(_text(left + 24 + n * 110, height - 5, _short(name, 14)))
    return _svg(css, attrs, width, height, body)
