"""A log line that a flood cannot multiply: at most one per interval.

Refusing a connection is cheap; logging each refusal is not, and a flood of
bad connections must not become a flood of log lines. :class:`ThrottledLog`
logs the first event, then stays quiet for ``interval`` seconds, then logs the
next one together with how many it left out. Time is an argument.
"""

from __future__ import annotations

import logging

__all__ = ["ThrottledLog"]


class ThrottledLog:
    """Logs ``note(...)`` at most once per ``interval`` seconds (default 60) at ``level``."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.interval = interval
        self.level = level
        self.left_out = 0
        self._quiet_until = float("-inf")

    def note(self, message: str, *, now: float) -> bool:
        """Log ``message`` unless one was logged less than ``interval`` s ago; True if logged."""
        if now < self._quiet_until:
            self.left_out += 1
            return False
        if self.left_out:
            message += f" ({self.left_out} more like it since the last one, not logged)"
        self.logger.log(self.level, "%s", message)
        self.left_out = 0
        self._quiet_until = now + self.interval
        return True
