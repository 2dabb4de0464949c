"""Decoding single files: odd but valid images become the right RGB values; broken files are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from warmstart.data.images import BadImageError, load_square, open_image, resize_center, to_rgb
from warmstart.errors import UserError


def _rgb(path) -> np.ndarray:
    img = open_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_odd_modes_become_rgb_with_the_right_values(tmp_path):
    # 16-bit greyscale PNG: scaled, not clipped (PIL's convert("RGB") would make 25700 white)
    a16 = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert _rgb(tmp_path / "g16.png")[0, :, 0].tolist() == [0, 100, 255, 128]
    assert (_rgb(tmp_path / "g16.png") == _rgb(tmp_path / "g16.png")[..., :1]).all()

    # RGBA: composited on black, so a transparent pixel is black whatever colour it hides
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [255, 255, 255, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = _rgb(tmp_path / "a.png")[0].astype(int)
    assert got[0].tolist() == [200, 100, 50] and got[2].tolist() == [0, 0, 0]
    assert np.abs(got[1] - np.array([200, 100, 50]) * 128 / 255).max() <= 1

    # greyscale with alpha, 1-bit, plain greyscale
    Image.fromarray(np.array([[[90, 255], [90, 0]]], dtype=np.uint8), "LA").save(tmp_path / "la.png")
    assert _rgb(tmp_path / "la.png")[0].tolist() == [[90, 90, 90], [0, 0, 0]]
    Image.fromarray(np.array([[True, False]])).convert("1").save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    assert _rgb(tmp_path / "b.png")[0].tolist() == [[255] * 3, [0] * 3]
    Image.new("L", (3, 2), 77).save(tmp_path / "l.jpg", quality=100)
    assert (_rgb(tmp_path / "l.jpg") == 77).all()

    # palette GIF with a transparent colour; lossless WebP; 1x1 pixel; CMYK JPEG
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 250, 0, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.save(tmp_path / "p.gif", transparency=1)
    assert _rgb(tmp_path / "p.gif")[0].tolist() == [[10, 20, 30], [0, 0, 0]]
    Image.new("RGB", (5, 4), (12, 200, 99)).save(tmp_path / "w.webp", lossless=True)
    assert (_rgb(tmp_path / "w.webp") == [12, 200, 99]).all()
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "one.png")
    assert _rgb(tmp_path / "one.png").tolist() == [[[1, 2, 3]]]
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(_rgb(tmp_path / "cmyk.jpg").astype(int) - [255, 0, 0]).max() <= 3


def test_float_and_32bit_images():
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]
    i32 = Image.fromarray(np.array([[0, 257 * 7, 70000]], dtype=np.int32))
    assert i32.mode == "I" and np.asarray(to_rgb(i32))[0, :, 0].tolist() == [0, 7, 255]


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert (_rgb(tmp_path / "anim.gif") == [255, 0, 0]).all()


def test_hymenoptera_placeholder_gif_loads(hymenoptera):
    img = open_image(hymenoptera / "train" / "ants" / "imageNotFound.gif")
    assert img.mode == "RGB" and img.size == (300, 300)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # white on the left, 40 wide x 20 high as stored
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    img.save(tmp_path / "o.jpg", exif=exif, quality=100)
    viewed = _rgb(tmp_path / "o.jpg")
    assert viewed.shape == (40, 20, 3)
    assert viewed[:15].mean() > 240 and viewed[25:].mean() < 15  # the left became the top
    sq = load_square(tmp_path / "o.jpg", 16)
    assert sq.shape == (16, 16, 3) and np.array_equal(sq, resize_center(open_image(tmp_path / "o.jpg"), 16))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_large_jpeg_fast_path_matches_full_decode(tmp_path, hymenoptera, orientation, monkeypatch):
    """Large JPEGs are decoded at a reduced DCT scale; the result stays within a few grey levels."""
    from PIL import JpegImagePlugin

    drafted = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        res = real_draft(self, mode, size)
        drafted.append(self.size)
        return res

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    src = Image.open(hymenoptera / "val" / "bees" / "1032546534_06907fe3b3.jpg").convert("RGB")
    big = src.resize((src.width * 4, src.height * 4), Image.Resampling.BICUBIC)  # ~2000 px: decoded at 1/4
    exif = big.getexif()
    exif[0x0112] = orientation
    big.save(tmp_path / "big.jpg", quality=92, exif=exif)
    fast = load_square(tmp_path / "big.jpg", 64).astype(int)
    full = resize_center(open_image(tmp_path / "big.jpg"), 64).astype(int)
    diff = np.abs(fast - full)
    assert fast.shape == (64, 64, 3) and drafted == [(366, 500)]  # decoded at 1/4 of 1464 x 2000
    assert diff.mean() < 0.3 and diff.max() <= 2  # measured: mean 0.13, max 1


def test_broken_files_are_named(tmp_path, hymenoptera):
    data = (hymenoptera / "val" / "ants" / "10308379_1b6c72e180.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a JPEG\n")
    for name, reason in (("half.jpg", "truncated"), ("zero.jpg", "not an image file"),
                         ("text.jpg", "not an image file")):
        for load in (open_image, lambda p: load_square(p, 32)):
            with pytest.raises(BadImageError) as e:
                load(tmp_path / name)
            msg = str(e.value)
            assert isinstance(e.value, UserError) and e.value.path == str(tmp_path / name)
            assert msg.startswith(f"{tmp_path / name}: cannot decode image (") and reason in msg
            assert msg.endswith("fix or remove it, or pass --skip-bad-images") and "\n" not in msg


def test_truncated_jpeg_reported_even_if_pil_was_told_to_accept_it(tmp_path, hymenoptera, monkeypatch, caplog):
    data = (hymenoptera / "val" / "ants" / "10308379_1b6c72e180.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BadImageError, match="truncated"):
        open_image(tmp_path / "half.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert any("LOAD_TRUNCATED_IMAGES" in r.getMessage() for r in caplog.records)
