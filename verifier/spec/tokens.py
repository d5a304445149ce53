"""Tokenizer for VNN-LIB (1.0 and 2.0) text.

One compiled regex runs over the whole text and yields plain strings (``re.findall``), which is
several times faster than building match objects for every token of a 60,000-disjunct spec.
Token positions are only needed for error messages, so they are recomputed on demand by
re-running the same regex with ``finditer`` up to the offending token.

Tokens: ``(``, ``)``, quoted strings (ONNX names in 2.0), bracketed tensor shapes or indexed
names such as ``[1,5]`` / ``X[0, 3]`` (spaces allowed inside the brackets), and every other run
of characters up to whitespace, a parenthesis or ``;`` (symbols, keywords, numbers). ``;``
starts a comment that runs to the end of the line.
"""

from __future__ import annotations

import re

from verifier.errors import SpecError

_TOKEN = re.compile(
    r"[()]"
    r"|[^\s()\[\];\"]+(?:\[[^\]\n();]*\])?"  # symbol, keyword, number, name[indices]
    r"|\[[^\]\n();]*\]"  # [shape]
    r'|"[^"\n]*"'  # quoted string
    r"|;[^\n]*"  # comment
    r"|[^\s();]+"  # anything else up to a delimiter (an unclosed '[' or '"')
)


_COMMENT = re.compile(r";[^\n]*")


def tokenize(text: str) -> list[str]:
    """All tokens of ``text`` in order, comments removed."""
    if '"' not in text and "[" not in text:
        # Same tokens as the regex gives when there are no strings or brackets (``str.split``
        # and ``\s`` agree on whitespace), about ten times faster (all of VNN-LIB 1.0).
        if ";" in text:
            text = _COMMENT.sub(" ", text)
        return text.replace("(", " ( ").replace(")", " ) ").split()
    toks = _TOKEN.findall(text)
    if any(t[0] == ";" for t in toks):
        toks = [t for t in toks if t[0] != ";"]
    return toks


def token_offset(text: str, index: int) -> int:
    """Character offset of token number ``index`` (as counted by :func:`tokenize`).

    An index past the last token gives the end of the text (used for "unexpected end").
    """
    n = 0
    for m in _TOKEN.finditer(text):
        if m.group()[0] == ";":
            continue
        if n == index:
            return m.start()
        n += 1
    return len(text)


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def describe(tok: str | None) -> str:
    """A token as shown in error messages."""
    if tok is None:
        return "end of file"
    if len(tok) > 40:
        tok = tok[:37] + "..."
    return repr(tok)


def error_at(text: str, source: str, index: int, message: str) -> SpecError:
    """A SpecError whose message starts with ``source:line:col:`` of token ``index``."""
    line, col = line_col(text, token_offset(text, index))
    return SpecError(f"{source or '<spec>'}:{line}:{col}: {message}")
