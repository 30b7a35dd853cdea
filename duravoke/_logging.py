"""The ``"duravoke"`` logger, the one every module logs to.

It has a ``NullHandler``, as a library's logger should: applications choose where the
records go (``logging.basicConfig(level=logging.INFO)`` shows runs starting and ending).
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("duravoke")
logger.addHandler(logging.NullHandler())
