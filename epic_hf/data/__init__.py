"""The data layer: what a user holds (a Dataset, a stream, a folder, a file, a Hub id) read as keyed, decoded batches.

:mod:`.resolve` turns it into an :class:`ImageSource`; :mod:`.source` reads it in key order,
decoding one image at a time so that an unreadable one is skipped (:class:`SkippedSamples`),
in the one batch loop the fit and the evaluation share.
"""

from .resolve import DatasetLike, open_source, resolve_dataset
from .source import Batch, ImageSource, SkippedSamples

__all__ = ["Batch", "DatasetLike", "ImageSource", "SkippedSamples", "open_source", "resolve_dataset"]
