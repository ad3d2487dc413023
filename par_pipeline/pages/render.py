"""The template environment and the pieces every page uses: percent formatting, embedded thumbnails, SVG charts."""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from PIL import Image

from .. import __version__
from ..reports import pct

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
THUMB_SIZE = (48, 96)  # width, height at most: a page of thousands of tracklets stays small


def render_page(template: str, **context: Any) -> str:
    """One page from `templates/<template>`; autoescaped, so names from users' data cannot inject markup."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("par_pipeline.pages", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = pct
    env.filters["tojson_script"] = script_json
    env.globals.update(par_version=__version__, palette=PALETTE)  # imported macros see globals, not the context
    return env.get_template(template).render(**context)


def script_json(value: Any) -> str:
    """JSON for a <script type="application/json"> block: '</' cannot end the block early."""
    from markupsafe import Markup

    return Markup(json.dumps(value, separators=(",", ":")).replace("</", "<\\/"))


def thumbnail_uri(image: Image.Image, size: tuple[int, int] = THUMB_SIZE) -> str:
    """A small JPEG of `image` as a data: URI (embedded once in the page; no file beside it)."""
    thumb = image.convert("RGB")
    thumb.thumbnail(size)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Chart:
    """An SVG chart's geometry in pixels, computed here so that the template only draws."""
    title: str
    xlabel: str
    ylabel: str
    width: int = 260
    height: int = 200
    left: int = 40
    bottom: int = 34
    top: int = 22
    right: int = 8
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] = (0.0, 1.0)
    x_ticks: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    y_ticks: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    x_tick_format: str = "{:g}"
    y_tick_format: str = "{:g}"
    lines: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)

    def x(self, v: float) -> float:
        lo, hi = self.x_range
        return round(self.left + (v - lo) / ((hi - lo) or 1) * (self.width - self.left - self.right), 1)

    def y(self, v: float) -> float:
        lo, hi = self.y_range
        return round(self.height - self.bottom - (v - lo) / ((hi - lo) or 1) * (self.height - self.bottom - self.top),
                     1)

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str, label: str, errors: Sequence[float] | None
             = None) -> None:
        self.lines.append({"points": " ".join(f"{self.x(a)},{self.y(b)}" for a, b in zip(xs, ys)), "color": color,
                           "label": label,
                           "bars": [] if errors is None else [(self.x(a), self.y(b - e), self.y(b + e))
                                                              for a, b, e in zip(xs, ys, errors)]})

    def point(self, x: float, y: float, color: str, title: str) -> None:
        self.points.append({"x": self.x(x), "y": self.y(y), "color": color, "title": title})

    def vertical_rule(self, x: float, color: str, title: str) -> None:
        self.rules.append({"x": self.x(x), "color": color, "title": title})

    @property
    def axes(self) -> dict[str, Any]:
        return {"x0": self.left, "x1": self.width - self.right, "y0": self.height - self.bottom, "y1": self.top,
                "xt": [(self.x(t), self.x_tick_format.format(t)) for t in self.x_ticks],
                "yt": [(self.y(t), self.y_tick_format.format(t)) for t in self.y_ticks]}
