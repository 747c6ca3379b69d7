"""A small document model (headings, paragraphs, nested lists, quotes, tables) and its two
renderings, Markdown and standalone HTML, for documents generated from a policy set.

What it guarantees: every piece of text is escaped for its format (Markdown: characters that
would start markup are backslash-escaped; HTML: ``html.escape``), so a policy description or a
resource value can never inject markup into the document. ``Code`` spans are the one exception
in Markdown, where they are fenced with enough backticks.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Code", "Doc", "Heading", "Item", "Para", "Quote", "Table", "Text", "render"]


@dataclass(frozen=True)
class Code:
    """A literal name (a policy id, a command), set in a monospace font."""

    text: str


Text = str | Code | Sequence["str | Code"]
"""Inline text: plain, code, or a run of both."""


@dataclass(frozen=True)
class Heading:
    level: int
    text: Text


@dataclass(frozen=True)
class Para:
    text: Text


@dataclass(frozen=True)
class Quote:
    """A text the reply receives, shown as it is written."""

    text: str


@dataclass(frozen=True)
class Item:
    """A list item, with an optional nested list."""

    text: Text
    children: tuple[Item, ...] = ()


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]


Block = Heading | Para | Quote | Item | Table


@dataclass
class Doc:
    title: str
    blocks: list[Block | tuple[Item, ...]] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def items(self, items: Sequence[Item]) -> None:
        """One list of items."""
        if items:
            self.blocks.append(tuple(items))


def render(doc: Doc, fmt: str) -> str:
    """``doc`` as ``markdown`` or ``html``."""
    if fmt == "markdown":
        return _Markdown().doc(doc)
    if fmt == "html":
        return _Html().doc(doc)
    raise ValueError(f"unknown format {fmt!r}")


def _runs(text: Text) -> list[str | Code]:
    if isinstance(text, (str, Code)):
        return [text]
    return list(text)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
_MD_LEAD = re.compile(r"^(?=[#>+=-]|\d+[.)])")


class _Markdown:
    def inline(self, text: Text) -> str:
        out = []
        for run in _runs(text):
            if isinstance(run, Code):
                ticks = "`" * (max((len(m) for m in re.findall(r"`+", run.text)), default=0) + 1)
                out.append(f"{ticks} {run.text} {ticks}" if "`" in run.text else f"`{run.text}`")
            else:
                out.append(_MD_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", run)))
        return _MD_LEAD.sub("\\\\", "".join(out), count=1)

    def doc(self, doc: Doc) -> str:
        parts = [f"# {self.inline(doc.title)}"]
        for block in doc.blocks:
            parts.append(self.block(block))
        return "\n\n".join(parts) + "\n"

    def block(self, block: Block | tuple[Item, ...]) -> str:
        if isinstance(block, tuple):
            return "\n".join(self.item(item, 0) for item in block)
        if isinstance(block, Heading):
            return "#" * min(block.level, 6) + " " + self.inline(block.text)
        if isinstance(block, Para):
            return self.inline(block.text)
        if isinstance(block, Quote):
            return "\n".join("> " + self.inline(line) for line in block.text.split("\n"))
        if isinstance(block, Item):
            return self.item(block, 0)
        head = "| " + " | ".join(self.inline(h) for h in block.header) + " |"
        rule = "|" + "|".join("---" for _ in block.header) + "|"
        rows = ["| " + " | ".join(self.inline(c) for c in row) + " |" for row in block.rows]
        return "\n".join([head, rule, *rows])

    def item(self, item: Item, depth: int) -> str:
        lines = ["  " * depth + "- " + self.inline(item.text)]
        lines += [self.item(child, depth + 1) for child in item.children]
        return "\n".join(lines)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
    "padding:.3rem .5rem;text-align:left;vertical-align:top}blockquote{margin:.5rem 0;"
    "padding:.2rem 1rem;border-left:4px solid #8ab}code{background:#f3f3f3;padding:0 .2rem}"
)


class _Html:
    def inline(self, text: Text) -> str:
        return "".join(
            f"<code>{html.escape(run.text)}</code>" if isinstance(run, Code) else html.escape(run)
            for run in _runs(text)
        )

    def doc(self, doc: Doc) -> str:
        title = html.escape(doc.title)
        body = "\n".join(self.block(block) for block in doc.blocks)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
        )

    def block(self, block: Block | tuple[Item, ...]) -> str:
        if isinstance(block, tuple):
            return self.items(block)
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            return f"<h{level}>{self.inline(block.text)}</h{level}>"
        if isinstance(block, Para):
            return f"<p>{self.inline(block.text)}</p>"
        if isinstance(block, Quote):
            lines = "<br>".join(html.escape(line) for line in block.text.split("\n"))
            return f"<blockquote>{lines}</blockquote>"
        if isinstance(block, Item):
            return self.items((block,))
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
        rows = "".join(
            "<tr>" + "".join(f"<td>{self.inline(c)}</td>" for c in row) + "</tr>"
            for row in block.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def items(self, items: Sequence[Item]) -> str:
        out = []
        for item in items:
            nested = self.items(item.children) if item.children else ""
            out.append(f"<li>{self.inline(item.text)}{nested}</li>")
        return "<ul>" + "".join(out) + "</ul>"
