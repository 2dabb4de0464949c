"""Opening one image file as 8-bit RGB, whatever its mode, and the resize + centre crop that feeds the cache.

Rules (the same for every data source):

* Any mode becomes 8-bit RGB. ``L``/``1``/``P``/``CMYK``/``YCbCr`` use PIL's conversion. 16-bit and 32-bit
  integer greyscale (``I;16``, ``I``; e.g. 16-bit PNGs) are *scaled* to 0..255 (``v / 257``) -- PIL's own
  ``convert("RGB")`` would clip everything above 255 to white. Float images (``F``) are taken as 0..1
  when their maximum is <= 1, else as 0..255.
* Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) is composited on **black**, so a
  transparent pixel is black whatever colour the file stores under it (``convert("RGB")`` would instead
  reveal that hidden colour).
* Only the first frame of an animated GIF/WebP is used. EXIF orientation is applied, so a phone photo
  is seen the way an image viewer shows it.
* A file PIL cannot decode completely (zero bytes, not an image, a truncated JPEG) raises
  :class:`BadImageError`. PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` would silently fill the missing part
  of a truncated file with grey; when another library has switched it on, it is switched off again
  (with one warning) so broken files are reported instead of trained on.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Union

import numpy as np
from warmstart.data import _torchvision  # noqa: F401, I001  (first: torchvision without torch._dynamo)
import torchvision.transforms.functional as F
from PIL import ExifTags, Image, ImageFile, ImageOps
from torchvision.datasets.folder import IMG_EXTENSIONS as _TV_EXTENSIONS
from torchvision.transforms import InterpolationMode

from warmstart.errors import UserError, unknown

log = logging.getLogger("warmstart.data")

#: Extensions (lower case) listed as images in folders: torchvision's ``IMG_EXTENSIONS`` plus GIF and WebP.
IMG_EXTENSIONS: tuple[str, ...] = tuple(sorted(set(_TV_EXTENSIONS) | {".gif", ".webp"}))

#: JPEGs are decoded at a reduced DCT scale (PIL ``draft``) only while the shorter side stays at least
#: this many times the target size, so the antialiased resize that follows still averages >= 4x4 pixels
#: and the result matches a full decode to within 2 grey levels (measured; tests/test_data_images.py).
DRAFT_GAP = 4

DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, ZeroDivisionError,
                 Image.DecompressionBombError)

PathLike = Union[str, Path]


class BadImageError(UserError):
    """A file that cannot be decoded as an image; ``.path`` names it."""

    def __init__(self, path: str, reason: str, more: int = 0) -> None:
        self.path, self.reason = path, reason
        also = f" ({more} more images cannot be decoded either)" if more else ""
        super().__init__(f"{path}: cannot decode image ({reason}); fix or remove it, or pass --skip-bad-images{also}")


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with an image extension (case-insensitive)."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def interpolation(name: str) -> InterpolationMode:
    """The torchvision interpolation mode for a name such as ``"bilinear"`` (from weights metadata)."""
    modes = {m.value: m for m in F.pil_modes_mapping}
    try:
        return modes[name.lower()]
    except KeyError:
        raise unknown("interpolation", name, modes) from None


def _strict_truncation() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL's ImageFile.LOAD_TRUNCATED_IMAGES was switched on (by another library); "
                    "warmstart switches it off so truncated images are reported instead of padded with grey")
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB, following the rules in the module docstring."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        a = np.asarray(img)
        if mode == "F":
            a = a.astype(np.float64) * (255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0)
        else:
            a = a.astype(np.float64) / 257.0
        a = np.nan_to_num(a, nan=0.0)
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(path: PathLike) -> Image.Image:
    """Decode ``path`` completely into an 8-bit RGB image (first frame, EXIF orientation applied).

    Raises :class:`BadImageError` when the file cannot be decoded.
    """
    _strict_truncation()
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except DECODE_ERRORS as e:
        raise BadImageError(str(path), decode_reason(e)) from None


def load_square(path: PathLike, size: int, mode: InterpolationMode = InterpolationMode.BILINEAR) -> np.ndarray:
    """Decode ``path`` and :func:`resize_center` it to a uint8 size x size x 3 array.

    Same result as ``resize_center(open_image(path), size)``, faster for large JPEGs: they are decoded at a
    reduced DCT scale (1/2, 1/4, 1/8; PIL ``draft``) while the shorter side stays >= ``DRAFT_GAP * size``,
    and the resize then samples exactly the area of the full image (PIL's ``box``), as ``Image.thumbnail``
    does. Raises :class:`BadImageError` when the file cannot be decoded.
    """
    _strict_truncation()
    try:
        with Image.open(path) as img:
            full = img.size
            box = None
            if img.format == "JPEG":
                w, h = full
                scale = DRAFT_GAP * size / min(w, h)
                if scale <= 0.5:
                    res = img.draft(None, (max(1, int(w * scale)), max(1, int(h * scale))))
                    box = res[1] if res is not None and img.size != full else None
            img.load()
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
            rgb = to_rgb(img)
            rgb.load()
    except DECODE_ERRORS as e:
        raise BadImageError(str(path), decode_reason(e)) from None
    return _resize_crop(rgb, size, mode, box=box, full=full, transpose=_ORIENTATION.get(orientation))


def decode_reason(e: BaseException) -> str:
    text = str(e).split("\n")[0].strip()
    if "truncated" in text:
        return "truncated file?"
    if type(e).__name__ == "UnidentifiedImageError" or text.startswith("cannot identify"):
        return "not an image file, or an empty one"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def resize_center(img: Image.Image, size: int, mode: InterpolationMode = InterpolationMode.BILINEAR) -> np.ndarray:
    """torchvision's ``Resize(size)`` (shorter side) + ``CenterCrop(size)`` on a PIL image -> uint8 size x size x 3.

    A numpy array (height, width, channel), not a tensor: decoding threads then never start torch's
    intra-op thread pool, which on a busy machine made one-thread decoding 3-5x slower (measured).
    """
    return _resize_crop(img, size, mode)


# EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose)
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


def _resize_crop(img: Image.Image, size: int, mode: InterpolationMode, *, box=None, full=None,
                 transpose: Image.Transpose | None = None) -> np.ndarray:
    w, h = full or img.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)  # torchvision's rule for Resize(int)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    img = img.resize((new_w, new_h), F.pil_modes_mapping[mode], box=box)
    if transpose is not None:
        img = img.transpose(transpose)
    img = F.center_crop(img, [size, size])
    return np.asarray(img, dtype=np.uint8)
