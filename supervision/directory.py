"""Registered names: the current ref of each supervised child, by name.

Written only by the supervisor (on start, restart, stop); read by anyone at
the moment they need a ref, so a restarted service is found under its name
and nobody keeps telling a dead incarnation. Single dict operations are
atomic under the GIL, so readers need no lock.
"""

from __future__ import annotations

from typing import Any


class Directory:
    def __init__(self) -> None:
        self._refs: dict[str, Any] = {}

    def register(self, name: str, ref: Any) -> None:
        self._refs[name] = ref

    def unregister(self, name: str, ref: Any = None) -> None:
        if ref is None or self._refs.get(name) is ref:
            self._refs.pop(name, None)

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in list(self._refs) if n.startswith(prefix)]

    def lookup(self, name: str) -> Any | None:
        return self._refs.get(name)

    def tell(self, name: str, message: Any) -> bool:
        """Tell the current incarnation of ``name``; False if there is none."""
        ref = self._refs.get(name)
        if ref is None:
            return False
        try:
            ref.tell(message)
        except Exception:
            return False
        return True
