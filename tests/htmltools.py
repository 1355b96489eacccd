"""Reading built pages the way a browser would: every tag and its attributes."""

from __future__ import annotations

from html.parser import HTMLParser


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def tags(html: str) -> list[tuple[str, dict[str, str]]]:
    """Every start tag of ``html`` with its (unescaped) attributes, in order."""
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser.tags


def images(html: str) -> list[dict[str, str]]:
    return [attrs for tag, attrs in tags(html) if tag == "img"]


def links(html: str) -> list[str]:
    """Every URL the page references (href and src)."""
    found = []
    for tag, attrs in tags(html):
        for name in ("href", "src"):
            if name in attrs and tag in ("a", "link", "img", "script"):
                found.append(attrs[name])
    return found
