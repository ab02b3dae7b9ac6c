"""HTML built from parts that escape by default: text becomes markup only through `esc`.

Model replies are untrusted (a reply may contain `<script>`), so nothing is put into a page by
string formatting: `tag` escapes every child and attribute that is not already `Markup`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from urllib.parse import urlencode


class Markup(str):
    """Text that is already safe HTML (made by `esc`, `tag` or `join`)."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """`value` as HTML text: markup stays, anything else is escaped (quotes too)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    return Markup(sep.join(esc(part) for part in _flatten(parts)))


def _flatten(parts: Iterable[object]) -> Iterable[object]:
    for part in parts:
        if part is None or part is False:
            continue
        if isinstance(part, (list, tuple, Iterator)):
            yield from _flatten(part)
        else:
            yield part


def tag(element: str, /, *children: object, **attrs: object) -> Markup:
    """`<element attrs>children</element>`. Attribute names: a trailing `_` is dropped (`class_`),
    `_` becomes `-` (`data_job`); None or False leaves an attribute out, True writes it bare."""
    rendered = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        rendered.append(f" {attr}" if value is True else f' {attr}="{esc(value)}"')
    opening = f"<{element}{''.join(rendered)}>"
    if element in VOID:
        return Markup(opening)
    return Markup(f"{opening}{join(children)}</{element}>")


VOID = {"meta", "link", "img", "input", "br", "hr"}


def url(path: str, **params: object) -> str:
    """A link inside the viewer: a fixed path and its query (empty values left out)."""
    query = urlencode({key: value for key, value in params.items() if value not in (None, "", False)})
    return f"{path}?{query}" if query else path


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def rate(value: float | None, lo: float | None, hi: float | None) -> Markup:
    """A rate with its 95% interval, e.g. `42% [30–55]`."""
    if value is None:
        return esc("–")
    interval = "" if lo is None or hi is None else f" [{100 * lo:.0f}–{100 * hi:.0f}]"
    return tag("span", pct(value), tag("small", interval), class_="rate")
