"""The export's JSON text, fast: the bytes of `exchange.dumps` (json.dumps with ensure_ascii=False
and indent=2, then `trust.json_escaped`, in UTF-8) from orjson's C encoder instead of json's
pure-Python indenting encoder (which is what json.dumps uses whenever `indent` is given).

orjson writes the same layout (two spaces, `": "`, one item per line, `[]` and `{}` when empty)
and escapes strings exactly as json.dumps(ensure_ascii=False) does (checked for every code point
in tests/test_export_bytes.py). Where the two can differ, the reference encoder is used instead:
- a value orjson refuses (an int outside 64 bits, a lone surrogate, a key that is not a string,
  nesting deeper than orjson's limit, a type neither knows) raises: the reference then writes
  what json.dumps writes, or raises what it raises;
- a float (orjson spells some exponents differently: 2.5e-7 against 2.5e-07) is found in the
  output, where a number can stand only after `": ` or at the start of a line (a string cannot
  hold a raw newline, and a `"` inside one is always escaped); a false alarm costs only time;
- NaN and Infinity, which orjson writes as null: the caller says when its values may hold them
  (`exact=False`): the export reader flags any float it reads from the database.
Characters that `trust.shown` would escape are then found in the UTF-8 bytes (UNSAFE_UTF8, the
byte form of `trust.UNSAFE` above U+007E, generated from it and checked against it in the tests)
and escaped as `json_escaped` escapes them; the JSON escapes below U+0020 are orjson's own.
"""

from __future__ import annotations

import json
import re

from coopctl.trust import json_escaped

# trust.UNSAFE in UTF-8, without U+0000-U+001F (never raw in JSON text but for the newlines of the
# layout) and the surrogates (orjson refuses them: the reference path escapes them).
UNSAFE_UTF8 = re.compile(
    rb"\x7f|\xc2[\x80-\x9f\xad]|\xd8[\x80-\x85\x9c]|\xdb[\x9d]|\xdc[\x8f]|\xe0\xa2[\x90-\x91]|\xe0\xa3[\xa2]"
    rb"|\xe1\xa0[\x8e]|\xe2\x80[\x8b-\x8f\xa8-\xae]|\xe2\x81[\xa0-\xa4\xa6-\xaf]|\xef\xbb[\xbf]|\xef\xbf[\xb9-\xbb]"
    rb"|\xf0\x91\x82[\xbd]|\xf0\x91\x83[\x8d]|\xf0\x93\x90[\xb0-\xbf]|\xf0\x9b\xb2[\xa0-\xa3]|\xf0\x9d\x85[\xb3-\xba]"
    rb"|\xf3\xa0\x80[\x81\xa0-\xbf]|\xf3\xa0\x81[\x80-\xbf]"
)
# A number with a fraction or an exponent where indented JSON puts a value: after `": ` (found at
# the speed of a literal search), or alone at the start of a line (an item of an array).
MEMBER_FLOAT = re.compile(rb'": -?[0-9]+[.eE]')
ITEM_FLOAT = re.compile(rb"\n *-?[0-9]+[.eE]")
# One bytes.translate pass (many times faster than a regex that tries every line or byte) makes a
# copy without spaces where every digit and `-` is `0` (so a line that starts with a number shows
# as b"\n0") and the first byte of each of UNSAFE_UTF8's sequences is NUL (never raw in JSON text):
# the regexes above run only when the copy shows what they look for.
_LEADS = (0x7F, 0xC2, 0xD8, 0xDB, 0xDC, 0xE0, 0xE1, 0xE2, 0xEF, 0xF0, 0xF3)
_LOOK = bytes(0 if i in _LEADS else 0x30 if chr(i) in "0123456789-" else i for i in range(256))

try:  # a declared dependency; without it (a broken install) the reference encoder does the work
    import orjson

    _OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    _REFUSED: tuple[type[BaseException], ...] = (orjson.JSONEncodeError, RecursionError)
except ImportError:  # pragma: no cover - orjson is installed with coopctl
    orjson = None


def reference(value) -> bytes:
    """What `exchange.dumps(value)` writes, without its final newline, in UTF-8: the definition."""
    return json_escaped(json.dumps(value, ensure_ascii=False, indent=2)).encode("utf-8")


class _Unknown(TypeError):
    pass


def _unknown(value):
    raise _Unknown(type(value).__name__)  # a datetime, a dataclass…: json.dumps decides (it refuses them)


def indented(value, *, exact: bool = True) -> bytes:
    """`reference(value)`, through orjson when it gives the same bytes. `exact=False`: the value may
    hold NaN or Infinity (which orjson cannot write as json does), so the reference is used."""
    if orjson is None or not exact:
        return reference(value)
    try:
        out = orjson.dumps(value, default=_unknown, option=_OPTIONS)
    except _REFUSED:
        return reference(value)
    look = out.translate(_LOOK, b" ")
    if MEMBER_FLOAT.search(out) is not None or (b"\n0" in look and ITEM_FLOAT.search(out) is not None):
        return reference(value)
    if 0 in look and UNSAFE_UTF8.search(out) is not None:
        return json_escaped(out.decode("utf-8")).encode("utf-8")
    return out
