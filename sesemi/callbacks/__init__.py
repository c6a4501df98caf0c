"""Lightning callbacks of sesemi."""

from sesemi.callbacks.images import ImageGridLogger
from sesemi.callbacks.objective import ObjectiveCheck

__all__ = ["ImageGridLogger", "ObjectiveCheck"]
