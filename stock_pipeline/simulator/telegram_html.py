"""Telegram's HTML parse mode (https://core.telegram.org/bots/api#html-style), strictly:
what the Bot API documents, so a message the fake accepts is one Telegram accepts.

Errors use the Bot API's wording ("Unsupported start tag \"br\" at byte offset 12") with
offsets in UTF-8 bytes, as Telegram reports them.
"""

from __future__ import annotations

import re

ALLOWED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span", "blockquote"}
)
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>\"']+))?)*)\s*>")
_ATTRIBUTE = re.compile(r"([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+)))?")
_ENTITY = re.compile(r"&(?:#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6})|([a-zA-Z]+));")


class TelegramHtmlError(ValueError):
    """Text Telegram would refuse with "Bad Request: can't parse entities: …"."""


def html_to_text(html: str) -> str:
    """The text Telegram displays for an HTML-formatted message; raises TelegramHtmlError."""
    text: list[str] = []
    open_tags: list[str] = []
    position = 0
    while position < len(html):
        char = html[position]
        if char == "<":
            position = _tag(html, position, open_tags)
        elif char == "&":
            decoded, position = _entity(html, position)
            text.append(decoded)
        elif char == ">":
            raise TelegramHtmlError(f'Unescaped ">" at byte offset {_byte_offset(html, position)}; write &gt;')
        else:
            text.append(char)
            position += 1
    if open_tags:
        raise TelegramHtmlError(f'Can\'t find end tag corresponding to start tag "{open_tags[-1]}"')
    return "".join(text)


def _byte_offset(html: str, position: int) -> int:
    return len(html[:position].encode("utf-8"))


def _tag(html: str, position: int, open_tags: list[str]) -> int:
    """Checks the tag at `position` against the open ones; returns the position after it."""
    offset = _byte_offset(html, position)
    match = _TAG.match(html, position)
    if match is None:
        raise TelegramHtmlError(f"Unclosed start tag at byte offset {offset}")
    closing, name, attributes = match.group(1) == "/", match.group(2).lower(), match.group(3)
    if closing:
        if not open_tags:
            raise TelegramHtmlError(f"Unexpected end tag at byte offset {offset}")
        if open_tags[-1] != name:
            raise TelegramHtmlError(
                f'Unmatched end tag at byte offset {offset}, expected "</{open_tags[-1]}>", found "</{name}>"'
            )
        open_tags.pop()
        return match.end()
    if name not in ALLOWED_TAGS:
        raise TelegramHtmlError(f'Unsupported start tag "{name}" at byte offset {offset}')
    values = {found[0].lower(): found[1] or found[2] or found[3] for found in _ATTRIBUTE.findall(attributes)}
    if name == "span" and values.get("class") != "tg-spoiler":
        raise TelegramHtmlError(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
    open_tags.append(name)
    return match.end()


def _entity(html: str, position: int) -> tuple[str, int]:
    """The character an entity at `position` stands for and the position after it."""
    match = _ENTITY.match(html, position)
    if match is None:
        raise TelegramHtmlError(f'Unescaped "&" at byte offset {_byte_offset(html, position)}; write &amp;')
    decimal, hexadecimal, name = match.groups()
    if name is not None:
        if name not in NAMED_ENTITIES:
            raise TelegramHtmlError(
                f'Unsupported entity "&{name};" at byte offset {_byte_offset(html, position)}; '
                "only &lt; &gt; &amp; &quot; and numeric entities are supported"
            )
        return NAMED_ENTITIES[name], match.end()
    code_point = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code_point > 0x10FFFF:
        raise TelegramHtmlError(f"Invalid numeric entity at byte offset {_byte_offset(html, position)}")
    return chr(code_point), match.end()


def utf16_length(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2
