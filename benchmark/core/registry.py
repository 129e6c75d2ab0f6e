"""One generic name -> item registry for every extension point.

Loaders, faults, corruptions, target rules, image properties, checks, group
feature kinds and reliability flags are each a ``Registry``: registering a
name twice raises, and looking up an unknown name raises the configured error
type with a message that lists the valid names. Each owning module keeps its
own ``register_x`` / ``get_x`` / ``list_x`` functions as thin aliases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

DUPLICATE = "A {kind} named {name!r} is already registered."
UNKNOWN = "Unknown {kind} {name!r}; expected one of: {valid}."


class Registry(Generic[T]):
    """Items of one kind by name, in registration order.

    ``duplicate`` and ``unknown`` are message templates with the fields
    ``{kind}``, ``{name}`` (and ``{valid}``, the comma-joined valid names, for
    ``unknown``); ``error`` is the exception type of an unknown name (a
    duplicate is a programming error and always raises ``ValueError``).
    ``listed`` gives the valid names in the order the message shows them
    (default: sorted).
    """

    def __init__(self, kind: str, *, error: type[Exception] = ValueError,
                 duplicate: str = DUPLICATE, unknown: str = UNKNOWN,
                 listed: Callable[[], list[str]] | None = None) -> None:
        self.kind = kind
        self.error = error
        self.duplicate = duplicate
        self.unknown = unknown
        self._listed = listed
        self._items: dict[str, T] = {}

    def check_new(self, name: str) -> None:
        """Raise ``ValueError`` if ``name`` is already registered."""
        if name in self._items:
            raise ValueError(self.duplicate.format(kind=self.kind, name=name))

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; a duplicate name raises."""
        self.check_new(name)
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its argument under ``name``; a duplicate raises
        both when the decorator is made and when it is applied."""
        self.check_new(name)

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        """The item registered as ``name``; an unknown name lists the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self._listed() if self._listed else self.names())
            raise self.error(self.unknown.format(kind=self.kind, name=name, valid=valid)) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, item) pairs in registration order."""
        return list(self._items.items())

    def values(self) -> list[T]:
        """Items in registration order."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        """Names in registration order."""
        return iter(self._items)

    def __delitem__(self, name: str) -> None:
        """Unregister ``name`` (tests that register a temporary entry)."""
        del self._items[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
