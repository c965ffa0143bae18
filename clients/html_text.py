"""HTML bodies as readable plain text (for ``show`` of an HTML-only message).

A message may carry only ``PR_HTML`` (binary: the HTML in the code page named by
``PR_INTERNET_CPID``). :func:`decode_html` turns those bytes into text and
:func:`html_to_text` turns the markup into lines a terminal can show: block elements
(paragraphs, headings, list items, table rows, ``<br>``) end lines, runs of white
space collapse except in ``<pre>``, list items get a bullet, a link shows its target
after its text, an image its ``alt`` text; ``<script>``, ``<style>``, ``<head>`` and
comments are dropped. It is built on the standard library's tolerant ``html.parser``
(no network, no entity expansion beyond HTML's own character references). The result
is still untrusted text: print it through :func:`clients.cli_safety.printable`.
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser

#: Elements whose content is never shown.
_HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript", "svg"})
#: Elements that start and end a line.
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
})  # fmt: skip
#: Elements that end a paragraph (a blank line after them).
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "pre"})
#: Void elements: no end tag, so they never open a hidden section.
_VOID = frozenset({"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr"})
#: Code pages ([MS-OXCMAIL]: PR_INTERNET_CPID) whose Python codec is not ``cp<N>``.
_CODE_PAGES = {
    1200: "utf-16-le", 1201: "utf-16-be", 20127: "ascii", 20866: "koi8-r", 21866: "koi8-u",
    50220: "iso2022-jp", 50221: "iso2022-jp", 50222: "iso2022-jp", 51932: "euc-jp",
    51949: "euc-kr", 52936: "hz", 54936: "gb18030", 65000: "utf-7", 65001: "utf-8",
    936: "gbk", 949: "cp949", 950: "big5", 932: "cp932",
}  # fmt: skip
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""",
                           re.IGNORECASE)  # fmt: skip


def codec_for(cpid: int | None) -> str | None:
    """The Python codec of a Windows code page number, or None when unknown."""
    if cpid is None:
        return None
    if cpid in _CODE_PAGES:
        return _CODE_PAGES[cpid]
    name = f"iso8859-{cpid - 28590}" if 28591 <= cpid <= 28606 else f"cp{cpid}"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(data: bytes, cpid: int | None = None) -> str:
    """HTML bytes as text: the code page given, else a ``<meta charset>``, else UTF-8.

    Undecodable bytes become U+FFFD; a byte order mark wins over both.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    codec = codec_for(cpid)
    if codec is None:
        match = _META_CHARSET.search(data[:4096])
        if match:
            try:
                codec = codecs.lookup(match[1].decode("ascii")).name
            except LookupError:
                codec = None
    return data.decode(codec or "utf-8", "replace")


class _TextMaker(HTMLParser):
    """Collects the visible text of a document as lines (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.lists: list[list[int]] = []  # per open list: [is_ordered, next number]
        self.links: list[str | None] = []

    # -- lines -----------------------------------------------------------------------

    def _end_line(self) -> None:
        text = "".join(self.current)
        self.current = []
        if not self.pre:
            text = re.sub(r"[ \t\r\n\f]+", " ", text).strip()
        if text:
            self.lines.append(text)

    def _blank_line(self) -> None:
        self._end_line()
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    # -- parser callbacks --------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
            return
        if self.hidden:
            return
        values = dict(attrs)
        if tag in _BLOCKS or tag == "br":
            self._end_line()
        if tag == "pre":
            self.pre += 1
        elif tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 1])
        elif tag == "li":
            if self.lists and self.lists[-1][0]:
                self.current.append(f"{self.lists[-1][1]}. ")
                self.lists[-1][1] += 1
            else:
                self.current.append("- ")
        elif tag == "a":
            self.links.append(values.get("href"))
        elif tag == "img" and values.get("alt"):
            self.current.append(f"[{values['alt']}]")
        elif tag in ("td", "th") and self.current:
            self.current.append("\t" if self.pre else " | ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:  # <script/>: nothing opened
            return
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(self.hidden - 1, 0)
            return
        if self.hidden:
            return
        if tag == "a" and self.links:
            href = self.links.pop()
            shown = "".join(self.current)
            if href and not href.startswith(("#", "javascript:")) and href not in shown:
                self.current.append(f" <{href.removeprefix('mailto:')}>")
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag in _PARAGRAPHS:
            self._blank_line()
        elif tag in _BLOCKS:
            self._end_line()
        if tag == "pre":
            self.pre = max(self.pre - 1, 0)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            parts = data.split("\n")
            for part in parts[:-1]:
                self.current.append(part)
                self._end_line_keep()
            self.current.append(parts[-1])
        else:
            self.current.append(data)

    def _end_line_keep(self) -> None:
        """End a line inside ``<pre>``: even an empty one counts."""
        self.lines.append("".join(self.current).rstrip())
        self.current = []

    def text(self) -> str:
        self.close()
        self._end_line()
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines)


def html_to_text(html: str) -> str:
    """The readable text of an HTML document or fragment (see the module docstring)."""
    maker = _TextMaker()
    maker.feed(html)
    return maker.text()
