"""Data: DATA argument -> listed splits (:func:`load_data`) -> decoded, cached torch Datasets (:class:`ImageDataset`).

Images reach the model as uint8 tensors (3 x crop x crop); a batch is normalised on its device by
:class:`Normalizer` with the mean/std of the weights (:class:`Preprocess`).
"""

from __future__ import annotations

from warmstart._lazy import lazy_names

#: public name -> the module that defines it (imported lazily)
_LAZY = {
    "GiB": "warmstart.data.dataset",
    "ImageDataset": "warmstart.data.dataset",
    "IMG_EXTENSIONS": "warmstart.data.images",
    "BadImageError": "warmstart.data.images",
    "open_image": "warmstart.data.images",
    "to_rgb": "warmstart.data.images",
    "DataSplits": "warmstart.data.loading",
    "describe_splits": "warmstart.data.loading",
    "load_data": "warmstart.data.loading",
    "DATASET_NAMES": "warmstart.data.named",
    "ArraySource": "warmstart.data.sources",
    "FileSource": "warmstart.data.sources",
    "ImageSource": "warmstart.data.sources",
    "TorchvisionSource": "warmstart.data.sources",
    "class_counts": "warmstart.data.sources",
    "Normalizer": "warmstart.data.transforms",
    "Preprocess": "warmstart.data.transforms",
}
_ALIAS = {"DATASET_NAMES": "NAMES"}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, _ALIAS)
