"""One policy for every bad input: stop at the first one, or skip it and keep count.

``data.on_error=raise`` turns the first problem into a ``DataError``; ``skip`` logs it as a
warning, remembers it (the count lands in ``results.json``) and lets the run go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ser.errors import DataError, SERError

log = logging.getLogger(__name__)

POLICIES = ("raise", "skip")


@dataclass
class Problems:
    """Collects the inputs a run had to leave out, under one ``on_error`` policy."""

    policy: str = "raise"
    messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise SERError(f"data.on_error={self.policy!r} is not one of {', '.join(POLICIES)}")

    def report(self, message: str) -> None:
        """Raise under ``raise``; otherwise log the one-line message and carry on."""
        if self.policy == "raise":
            raise DataError(f"{message} (set data.on_error=skip to leave it out)")
        log.warning("skipped: %s", message)
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)
