"""The composition root: which children the supervisor starts, in order.

Dependency order: exchange-facing services first, then feeds, then the
actors that use them. Each later capability adds its child specs here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervision.runtime import Runtime
    from supervision.supervisor import ChildSpec


def build_children(runtime: Runtime) -> list[ChildSpec]:
    """Child specs for the configured system (none beyond the supervisor yet)."""
    return []
