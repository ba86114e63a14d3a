"""Numbers on screen: ``reports.fmt`` is their one home (this name remains for older imports)."""

from ..reports.fmt import sig

__all__ = ["sig"]
