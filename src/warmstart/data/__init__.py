"""Data: DATA argument -> listed splits (:func:`load_data`) -> decoded, cached torch Datasets (:class:`ImageDataset`).

Images reach the model as uint8 tensors (3 x crop x crop); a batch is normalised on its device by
:class:`Normalizer` with the mean/std of the weights (:class:`Preprocess`).
"""

from warmstart.data import _torchvision  # noqa: F401  (first: torchvision without torch._dynamo)
from warmstart.data.dataset import GiB, ImageDataset
from warmstart.data.images import IMG_EXTENSIONS, BadImageError, open_image, to_rgb
from warmstart.data.loading import DataSplits, describe_splits, load_data
from warmstart.data.named import NAMES as DATASET_NAMES
from warmstart.data.sources import ArraySource, FileSource, ImageSource, TorchvisionSource, class_counts
from warmstart.data.transforms import Normalizer, Preprocess

__all__ = [
    "load_data", "DataSplits", "describe_splits", "class_counts", "ImageSource", "FileSource", "ArraySource",
    "TorchvisionSource", "ImageDataset", "GiB", "Preprocess", "Normalizer", "IMG_EXTENSIONS", "BadImageError",
    "open_image", "to_rgb", "DATASET_NAMES",
]
