"""Image exports (PNG text chunk, JPEG/WebP EXIF UserComment laid out as A1111/piexif write it)
and atomic zip bundles."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from report.exports import (
    ExportError,
    encode_image,
    exif_user_comment,
    image_format,
    write_zip,
)
from report.infotext_reader import read_parameters

TEXT = 'a "cat", on: a mat 🐱\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1'


def gradient(size=(64, 48)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8), "RGB")


def test_exif_block_is_laid_out_as_piexif_dumps_a_user_comment():
    block = exif_user_comment("hi")
    comment = b"UNICODE\0\0h\0i"
    assert block == (b"Exif\0\0" + b"MM\0\x2a\0\0\0\x08"
                     # IFD0: one entry, the Exif IFD (LONG) at offset 26
                     + b"\0\x01" + b"\x87\x69\0\x04\0\0\0\x01\0\0\0\x1a" + b"\0\0\0\0"
                     # Exif IFD: one entry, UserComment (UNDEFINED), its bytes at offset 44
                     + b"\0\x01" + b"\x92\x86\0\x07" + struct.pack(">II", len(comment), 44)
                     + b"\0\0\0\0" + comment)


@pytest.mark.parametrize("fmt,magic", [("jpeg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_jpeg_and_webp_carry_the_text_in_exif(fmt, magic):
    data = encode_image(gradient(), fmt, TEXT)
    assert data.startswith(magic)
    assert exif_user_comment(TEXT)[6:] in data  # the TIFF block, byte for byte
    assert read_parameters(data) == TEXT
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt.upper() and im.size == (64, 48)
        assert im.getexif().get_ifd(0x8769)[0x9286] == b"UNICODE\0" + TEXT.encode("utf-16-be")


def test_png_carries_the_text_chunk_and_none_means_no_text():
    data = encode_image(gradient(), "png", TEXT)
    assert Image.open(io.BytesIO(data)).info["parameters"] == TEXT
    plain = encode_image(gradient(), "png", None)
    assert b"parameters" not in plain and np.array_equal(np.asarray(Image.open(io.BytesIO(plain))),
                                                         np.asarray(gradient()))
    assert b"UNICODE" not in encode_image(gradient(), "jpeg", None)


def test_quality_trades_size_for_fidelity():
    image = gradient((128, 128))
    small = encode_image(image, "jpeg", None, quality=20)
    large = encode_image(image, "jpeg", None, quality=95)
    assert len(small) < len(large)
    err = [np.abs(np.asarray(Image.open(io.BytesIO(d)), dtype=int) - np.asarray(image, dtype=int)).mean()
           for d in (small, large)]
    assert err[1] < err[0] and err[1] < 2.0


def test_jpeg_lays_transparency_on_white():
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 8, 16))
    decoded = np.asarray(Image.open(io.BytesIO(encode_image(rgba, "jpeg", None))).convert("RGB"), dtype=int)
    assert np.abs(decoded[8, 13] - [255, 255, 255]).max() < 12  # was transparent red
    assert np.abs(decoded[8, 2] - [0, 0, 255]).max() < 12
    assert Image.open(io.BytesIO(encode_image(Image.new("L", (8, 8), 90), "jpeg", None))).mode == "RGB"


def test_too_long_text_for_jpeg_is_a_clear_error_and_fine_in_webp():
    long = "x" * 33_000  # UTF-16: 66,000 bytes, past one JPEG APP1 segment
    with pytest.raises(ExportError, match="too long for a JPEG's EXIF block .* save it as PNG or WebP"):
        encode_image(gradient(), "jpeg", long)
    assert read_parameters(encode_image(gradient(), "webp", long)) == long


@pytest.mark.parametrize("name,fmt", [("PNG", "png"), ("jpg", "jpeg"), (".JPEG", "jpeg"), (" webp ", "webp")])
def test_format_names(name, fmt):
    assert image_format(name) == fmt


@pytest.mark.parametrize("call,message", [
    (lambda: encode_image(gradient(), "gif", None),
     "unknown image format 'gif'; choose from png, jpeg, webp"),
    (lambda: encode_image(gradient(), "jpeg", None, quality=0),
     "quality must be a whole number from 1 to 100"),
])
def test_bad_export_arguments(call, message):
    with pytest.raises(ExportError, match=message):
        call()


# ---------------------------------------------------------------- zip


def test_zip_stores_images_deflates_text_and_copies_files(tmp_path):
    png = encode_image(gradient(), "png", TEXT)
    on_disk = tmp_path / "spec.json"
    on_disk.write_text('{"steps": 20}\n' * 50)
    members = {"cells/000-euler.png": png, "spec.json": on_disk, "metrics.csv": b"cell,rms\n" * 100,
               "grid.jpg": b"\xff\xd8xx"}
    target = write_zip(tmp_path / "bundle.zip", members)
    assert target == tmp_path / "bundle.zip"
    with zipfile.ZipFile(target) as zf:
        assert zf.testzip() is None
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
        assert kinds == {"cells/000-euler.png": zipfile.ZIP_STORED, "spec.json": zipfile.ZIP_DEFLATED,
                         "metrics.csv": zipfile.ZIP_DEFLATED, "grid.jpg": zipfile.ZIP_STORED}
        assert zf.read("cells/000-euler.png") == png and zf.read("spec.json") == on_disk.read_bytes()
        assert zf.getinfo("metrics.csv").compress_size < 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.zip", "spec.json"]


def test_failed_zip_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "bundle.zip"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("report.exports.os.replace", boom)
    with pytest.raises(OSError):
        write_zip(target, {"a.txt": b"new"})
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["bundle.zip"]


@pytest.mark.parametrize("members,message", [
    ({"../escape.txt": b""}, "must be a relative path without '..'"),
    ({"/abs.txt": b""}, "must be a relative path"),
    ({"C:/x.txt": b""}, "must be a relative path"),
    ({"": b""}, "must be a relative path"),
    ({"a.txt": "text, not bytes"}, "must be bytes or a file path, got str"),
    ({"a.txt": __import__("pathlib").Path("/no/such/file")}, "no such file"),
])
def test_bad_zip_members_are_refused_before_writing(tmp_path, members, message):
    with pytest.raises(ExportError, match=message):
        write_zip(tmp_path / "b.zip", members)
    assert not list(tmp_path.iterdir())


def test_backslash_names_become_folders(tmp_path):
    with zipfile.ZipFile(write_zip(tmp_path / "b.zip", {"cells\\001.png": b"x"})) as zf:
        assert zf.namelist() == ["cells/001.png"]
