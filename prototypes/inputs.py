"""What the store accepts from people, decided once for pages, forms and the API (store imports it too):
whole numbers the database can hold, text a reader can actually see, and text whose direction nobody
else can steer."""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

# The largest integer column on any backend we run on: PostgreSQL `integer` (SQLite's are 64-bit). Counts,
# limits and version numbers are kept in such columns, so a form never accepts more than this.
INT_MAX = 2**31 - 1
# Ids are 64-bit (DEFAULT_AUTO_FIELD is BigAutoField). A larger number can name nothing, and SQLite raises
# OverflowError when asked about it, so ids beyond this are treated as "no such thing".
ID_MAX = 2**63 - 1


def parse_int(value, *, minimum: int = 0, maximum: int = ID_MAX) -> int | None:
    """`value` (text from a query string or a form) as an int within [minimum, maximum], or None when it
    is anything else: empty, not a number, a fraction, out of range, or too long to be one. Only ASCII
    digits count: int() also takes "١٢" and "1_000", which nobody means as an id."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value if value is not None else "").strip()
        sign = -1 if text.startswith("-") else 1
        digits = text[1:] if sign == -1 else text
        # The length check keeps int() away from megabytes of digits (and its 4300-digit ValueError).
        if not digits or len(digits) > 20 or not (digits.isascii() and digits.isdigit()):
            return None
        number = sign * int(digits)
    return number if minimum <= number <= maximum else None


# Characters that take no visible space on their own. Besides whitespace and the format controls (zero
# width space and joiners, bidi marks and overrides, the BOM, invisible tags), some letters render as
# blanks (the Hangul fillers, the Braille blank), and marks made to sit on another character show
# nothing without one.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"})


def is_visibly_empty(text: str | None) -> bool:
    """True when a person would see nothing in `text`: made only of whitespace, zero-width and bidi
    control characters, blank letters or lone combining marks. The one rule behind "write something
    first" for titles, ideas, comments and display names."""
    for char in text or "":
        if char.isspace() or char in BLANK_LETTERS:
            continue
        if unicodedata.category(char) in INVISIBLE_CATEGORIES:
            continue
        return False
    return True


INVISIBLE_ONLY = "Write something a person can read: this holds only spaces or invisible characters."


def require_visible_text(value: str) -> None:
    """A validator (Django forms and REST framework serializers both run it) refusing text that shows
    nothing, like an empty required field."""
    if is_visibly_empty(value):
        raise ValidationError(INVISIBLE_ONLY, code="invisible")


# Bidi embeddings, overrides and isolates (LRE RLE PDF LRO RLO, LRI RLI FSI PDI). They change the order
# in which the characters around them are drawn, so "Invoice‮fdp.exe" reads as "Invoiceexe.pdf". Letters
# of right-to-left scripts need none of them: they carry their direction themselves.
BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def without_bidi_controls(text: str | None) -> str:
    """`text` with the bidi embedding, override and isolate controls removed (for showing it)."""
    return (text or "").translate(BIDI_CONTROLS)


def display_name(user) -> str:
    """How a person is named on pages, in messages and notifications: their full name when it shows
    something, else their username; without bidi controls either way."""
    full = user.get_full_name()
    return without_bidi_controls(user.get_username() if is_visibly_empty(full) else full)
