"""Bounded caches of pure checks, keyed by the exact value checked (for `replay` and `import`).

An export repeats the same policy, reminders, terms and instants across its orders: reading
and checking each distinct value once, then handing out the (immutable) result again, saves most
of the per-order work. Two values share a result only when they are the same JSON value with the
same types all the way down: `exact_key` tells `true` from `1`, `1.0` from `1`, `-0.0` from
`0.0`, `"3d"` from `"3d "`, so a second, different value never skips a check the first passed.
What cannot be keyed (a type JSON does not make) is simply not cached. A check that refuses a
value raises, and nothing is kept: the next equal value is checked, and refused, again.

Only functions that are pure (the result depends on the value and the other arguments alone,
nothing is changed) and whose results are never modified (frozen dataclasses, ints, strings)
may be cached here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Callable

_SCALARS = (str, int, bool, type(None))
_FLAT = frozenset(_SCALARS)


def exact_key(value):
    """A hashable form of a JSON value, equal to another's only for the same value of the same
    types; TypeError for a value that is not plain JSON (str, int, bool, None, float, Decimal,
    lists and objects of them)."""
    kind = type(value)
    if kind is dict:  # an object of plain scalars (a policy): keys, their types, values and theirs, in C
        types = tuple(map(type, value.values()))
        if _FLAT.issuperset(types) and _FLAT.issuperset(map(type, value)):
            return (dict, tuple(value), tuple(map(type, value)), types, tuple(value.values()))
    if kind in _SCALARS:
        return (kind, value)
    if kind is float or kind is Decimal:
        return (kind, repr(value))  # repr: -0.0 and 0.0 (equal as numbers) stay apart
    if kind is list:
        return (list, tuple([exact_key(inner) for inner in value]))
    if kind is dict:
        return (dict, tuple([(exact_key(key), exact_key(inner)) for key, inner in value.items()]))
    raise TypeError(f"not a plain JSON value: {kind.__name__}")


class ValueCache:
    """`function(value, *args)` remembered for up to `size` distinct (value, args); when full it is
    emptied and fills again (a book repeats few distinct values: they come back at once)."""

    def __init__(self, function: Callable, size: int = 512):
        self.function, self.size = function, size
        self.found: dict = {}

    def __call__(self, value, *args):
        try:
            key = (exact_key(value), args)
        except TypeError:
            return self.function(value, *args)
        found = self.found.get(key, _MISSING)
        if found is not _MISSING:
            return found
        result = self.function(value, *args)  # a refusal raises here: nothing is kept
        if len(self.found) >= self.size:
            self.found.clear()
        self.found[key] = result
        return result


class TextCache(ValueCache):
    """A ValueCache for functions of one text (an instant, a duration): keyed by the string itself;
    anything else is not cached."""

    def __call__(self, value, *args):
        if type(value) is not str:
            return self.function(value, *args)
        key = (value, args) if args else value
        found = self.found.get(key, _MISSING)
        if found is not _MISSING:
            return found
        result = self.function(value, *args)
        if len(self.found) >= self.size:
            self.found.clear()
        self.found[key] = result
        return result


_MISSING = object()
