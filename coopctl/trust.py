"""The one trust boundary (SPEC sections 1 and 7): every value that comes in, typed on the
command line or read from a file (`import`, `replay`, `verify`), passes these checks, and every
stored text that goes out to a terminal passes `shown`.

Pure: no I/O. Each check returns the value (unchanged: text is stored exactly as given) or
raises `InvalidInput` (exit 2) with a message that names the field and, for a refused character,
its code point as `U+XXXX`, never the character itself.
"""

from __future__ import annotations

import re
import unicodedata

from coopctl.errors import InvalidInput

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 2000
MAX_OPERATOR_LENGTH = 256
MAX_ORDER_ID = 2**53 - 1  # exact in every JSON reader (an IEEE double's integer range)

# Unicode categories never allowed in any text that comes in, and escaped in any that goes out:
# controls, format characters (zero-width characters, bidirectional controls, the byte-order
# mark), surrogates, line and paragraph separators. Ids also refuse every space but U+0020.
_FORBIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Free text (notes, reasons, evidence, texts) may hold newlines and tabs, nothing else of these.
_TEXT_ALLOWED_CONTROLS = frozenset("\n\t")


def code_point(ch: str) -> str:
    """'U+200B' for a character: how a refused character is named in a message."""
    return f"U+{ord(ch):04X}"


def _first_bad(value: str, *, allowed: frozenset[str] = frozenset(), other_spaces: bool = True) -> str | None:
    if value.isprintable():  # at C speed: no control, format, surrogate or separator character, no space but U+0020
        return None
    if value.isascii():  # the common case: only C0 controls and DEL can be wrong
        for ch in value:
            if (ch < " " or ch == "\x7f") and ch not in allowed:
                return ch
        return None
    for ch in value:
        if ch in allowed:
            continue
        category = unicodedata.category(ch)
        if category in _FORBIDDEN:
            return ch
        if not other_spaces and category == "Zs" and ch != " ":
            return ch
    return None


def check_id(value, what: str) -> str:
    """Merchant, creator, product ids and idempotency keys (SPEC section 1): non-empty text of at
    most 128 characters, in NFC form, without control or format characters, spaces other than
    U+0020, or a leading or trailing space."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} id must be non-empty text")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} id is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed")
    bad = _first_bad(value, other_spaces=False)
    if bad is not None:
        raise InvalidInput(f"{what} id '{shown(value)}' contains the character {code_point(bad)} ({_name(bad)}), which ids may not hold")
    if value[0] == " " or value[-1] == " ":
        raise InvalidInput(f"{what} id '{shown(value)}' has a leading or trailing space (U+0020)")
    if not value.isascii() and not unicodedata.is_normalized("NFC", value):
        bad = _first_unnormalised(value)
        raise InvalidInput(
            f"{what} id '{shown(value)}' is not in Unicode NFC form at the character {code_point(bad)} ({_name(bad)}): "
            f"it would look like '{shown(unicodedata.normalize('NFC', value))}' yet be another party; type it in NFC"
        )
    return value


def _first_unnormalised(value: str) -> str:
    """The character where a text stops being NFC (a combining mark NFC would compose with the one
    before it, or a character NFC replaces), to name it in a message."""
    for end in range(1, len(value) + 1):
        if not unicodedata.is_normalized("NFC", value[:end]):
            return value[end - 1]
    return value[-1]  # pragma: no cover - only called on a text that is not NFC


def id_problem(value: str) -> str | None:
    """Why a stored id would be refused today (None when it is valid): for `doctor`, which
    reports ids stored before the rules of SPEC section 1 were tightened."""
    try:
        check_id(value, "the")
    except InvalidInput as exc:
        return str(exc)
    return None


# Stored data (a database's own histories, rebuilt for `show` and `doctor`) was checked by the rules
# in force when it was written: before SPEC section 1 was tightened, ids and texts refused control
# characters only. Those values stay readable, so a rebuild of a stored history checks them by that
# older rule (`history.rebuild(..., strict=False)`); new input, typed or read from a file, never.
_LEGACY_FORBIDDEN = frozenset({"Cc", "Cs"})


def check_stored_id(value, what: str) -> str:
    """An id as the rules before SPEC section 1's look-alike rules accepted it: 1 to 128 characters
    of text without control characters (format characters, other spaces and NFD were allowed)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} id must be non-empty text")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} id is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed")
    for ch in value:
        if unicodedata.category(ch) in _LEGACY_FORBIDDEN or ch in "\u2028\u2029":
            raise InvalidInput(f"{what} id '{shown(value)}' contains the character {code_point(ch)} ({_name(ch)})")
    return value


def check_stored_text(value, what: str, *, limit: int = MAX_TEXT_LENGTH) -> str | None:
    """A note, reason or evidence as the older rules accepted it: newlines and tabs, no other
    control character (format characters were allowed)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    if len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    for ch in value:
        if unicodedata.category(ch) in _LEGACY_FORBIDDEN and ch not in _TEXT_ALLOWED_CONTROLS:
            raise InvalidInput(f"{what} contains the character {code_point(ch)} ({_name(ch)}), which is not allowed")
    return value


def check_text(value, what: str, *, limit: int = MAX_TEXT_LENGTH, nullable: bool = True) -> str | None:
    """Notes, reasons, evidence and notification texts: at most `limit` characters; newlines and
    tabs allowed, no other control or format character."""
    if value is None:
        if nullable:
            return None
        raise InvalidInput(f"{what} must be text")
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    if len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    bad = _first_bad(value, allowed=_TEXT_ALLOWED_CONTROLS)
    if bad is not None:
        raise InvalidInput(f"{what} contains the character {code_point(bad)} ({_name(bad)}), which is not allowed")
    return value


MAX_FILE_NAME = 255  # characters of an evidence file's name (what most file systems allow, in bytes)


def check_file_name(value, what: str = "file name") -> str:
    """An evidence file's name (its base name, recorded on the event and printed in `evidence`):
    1 to 255 characters, one line, no control or format characters (no bidirectional override
    can make `exe.pdf` of `fdp.exe`), no `/`, not `.` or `..`. A name that is not valid UTF-8 on
    disk reaches Python as lone surrogates, which are refused the same way."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be 1 to {MAX_FILE_NAME} characters")
    if len(value) > MAX_FILE_NAME:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {MAX_FILE_NAME} are allowed")
    bad = _first_bad(value)
    if bad is not None:
        raise InvalidInput(f"{what} '{shown(value)}' contains the character {code_point(bad)} ({_name(bad)}), which is not allowed; rename the file")
    if "/" in value or value in (".", ".."):
        raise InvalidInput(f"{what} '{shown(value)}' is not a file name")
    return value


def check_operator(value, what: str = "--operator") -> str:
    """Who typed a command: 1 to 256 characters, one line, no control or format characters."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be 1 to {MAX_OPERATOR_LENGTH} characters")
    if len(value) > MAX_OPERATOR_LENGTH:
        raise InvalidInput(f"{what} must be 1 to {MAX_OPERATOR_LENGTH} characters, got {len(value)}")
    bad = _first_bad(value)
    if bad is not None:
        raise InvalidInput(f"{what} contains the character {code_point(bad)} ({_name(bad)}), which is not allowed")
    return value


def _name(ch: str) -> str:
    return unicodedata.name(ch, "a control character").lower()


# --------------------------------------------------------------------------- numbers

_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: int() would read '٣' and '３' as 3, and '1_0' as 10


def parse_count(text, what: str, *, low: int = 0, high: int = 2**63 - 1) -> int:
    """A whole number written in ASCII digits, within [low, high]; anything else is InvalidInput."""
    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    elif isinstance(text, str) and _DIGITS.fullmatch(text.strip()):
        number = int(text.strip())
    elif isinstance(text, str) and text.strip().isascii() and text.strip().isdigit():  # digits, too many to be in range
        digits = text.strip()
        got = digits if len(digits) <= 40 else f"a number of {len(digits):,} digits"
        raise InvalidInput(f"{what} must be from {low} to {high}, got {got}")
    else:
        shown_text = text if not isinstance(text, str) or len(text) <= 40 else text[:20] + "…"
        raise InvalidInput(f"{what} must be a whole number written in digits 0-9, got {shown_text!r}")
    if not low <= number <= high:
        raise InvalidInput(f"{what} must be from {low} to {high}, got {number}")
    return number


def parse_order_id(text, what: str = "order id") -> int:
    """An order id: 1 to 2^53 - 1, in ASCII digits."""
    return parse_count(text, what, low=1, high=MAX_ORDER_ID)


# --------------------------------------------------------------------------- output

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_SAFE_ASCII = re.compile(r"[\x00-\x1f\x7f]")


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    point = ord(ch)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _FORBIDDEN


def shown(value, *, keep_newlines: bool = False) -> str:
    """Stored text as it may reach a terminal: control, format and separator characters (ESC,
    OSC, bidirectional overrides, zero-width characters) written as escapes (`\\x1b`, `\\u200b`),
    never as what they would do. Newlines and tabs are escaped too unless `keep_newlines`
    (multi-line messages keep their lines)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.isascii():
        if not _SAFE_ASCII.search(text):
            return text
        return "".join(
            ch if (keep_newlines and ch == "\n") or not (ch < " " or ch == "\x7f") else _escape_char(ch) for ch in text
        )
    return "".join(
        ch if (keep_newlines and ch == "\n") or not _unsafe(ch) else _escape_char(ch) for ch in text
    )


# Every character `shown` escapes but the newline (categories Cc, Cf, Cs, Zl, Zp; Unicode 14,
# Python 3.11), as one character class: a C-speed search finds whether a long text (an export
# chunk, whose only raw control character is the newline of its indentation) holds any at all.
# tests/test_trust_terminal.py checks that it covers every such character this Python knows.
UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f\ud800-\udfff]"
)


def json_escaped(text: str) -> str:
    """JSON text (as `json.dumps(..., ensure_ascii=False)` writes it) with every character that
    `shown` would escape written as a `\\uXXXX` escape (a surrogate pair above U+FFFF): the same
    JSON value for a program, nothing a terminal would act on for a person reading it. Such
    characters can stand only inside JSON strings, where the escape means the same character;
    json.dumps already escapes those below U+0020. Ordinary text is returned as it is."""
    if text.isascii() and "\x7f" not in text:
        return text  # the common case: nothing to look at
    if UNSAFE.search(text) is None:
        return text
    return text.translate({ord(ch): u_escape(ch) for ch in set(UNSAFE.findall(text))})


def u_escape(ch: str) -> str:
    """One character as JSON's `\\uXXXX` escape (a surrogate pair above U+FFFF), as
    `ensure_ascii=True` writes it."""
    point = ord(ch)
    if point < 0x10000:
        return f"\\u{point:04x}"
    point -= 0x10000
    return f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}"


MAX_ERROR_LINE = 500  # characters of a notification's `last_error` (SPEC section 5)


def error_line(text, *, limit: int = MAX_ERROR_LINE) -> str:
    """What went wrong outside (a command's stderr, a server's answer) as one line that is safe to
    store and to print: whitespace runs (newlines too) become one space, control and format
    characters are escaped as `shown` writes them, and it is cut to `limit` characters with `…`."""
    line = shown(" ".join(str(text).split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"
