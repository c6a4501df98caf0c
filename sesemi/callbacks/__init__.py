"""Lightning callbacks of sesemi."""

from sesemi.callbacks.heartbeat import Heartbeat
from sesemi.callbacks.images import ImageGridLogger
from sesemi.callbacks.nodes import RecordNodes
from sesemi.callbacks.objective import ObjectiveCheck
from sesemi.callbacks.progress import ProgressBar

__all__ = ["Heartbeat", "ImageGridLogger", "ObjectiveCheck", "ProgressBar", "RecordNodes"]
