"""Lightning callbacks of sesemi."""

from sesemi.callbacks.images import ImageGridLogger

__all__ = ["ImageGridLogger"]
