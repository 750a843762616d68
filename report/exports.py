"""Image files in other formats, and zip bundles.

This module owns encoding a grid or cell image as PNG, JPEG or WebP with its A1111 `parameters`
text where each format keeps it, and writing a zip of a run's files:

    encode_image(image, "png" | "jpeg" | "webp", parameters, quality=95) -> bytes
    write_zip(path, {"name in zip": bytes | Path}) -> Path          atomic (temp file + rename)

Where the text goes, as A1111 v1.10.1 writes it: PNG, a "parameters" text chunk
(report.infotext.png_bytes); JPEG and WebP, the EXIF UserComment (tag 0x9286 in the Exif IFD,
type UNDEFINED), "UNICODE\\0" then UTF-16 big-endian, in a big-endian TIFF block — what piexif's
`UserComment.dump(text, encoding="unicode")` + `piexif.dump` give, and what A1111's PNG Info reads.

The EXIF block is laid out here from the TIFF 6.0 and EXIF 2.3 specs rather than through
Pillow's Image.Exif: Pillow writes a bytes value in the Exif IFD with type BYTE, not UNDEFINED,
and piexif (so A1111's reader) then hands back a tuple of ints instead of the comment.
"""

from __future__ import annotations

import os
import struct
import time
import zipfile
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path, PurePosixPath

from PIL import Image

from report import infotext
from report.infotext_reader import EXIF_IFD, USER_COMMENT

FORMATS = ("png", "jpeg", "webp")
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
_ALIASES = {"jpg": "jpeg"}
_TIFF_LONG, _TIFF_UNDEFINED = 4, 7
# JPEG keeps EXIF in one APP1 segment: 65,535 bytes less the length field and the "Exif\0\0" header.
JPEG_MAX_EXIF = 65533
# Already-compressed members are stored; deflating them again only costs time.
STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".zip", ".safetensors")


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says what to change."""


def image_format(name: str) -> str:
    """The canonical format for a name users type: "PNG" -> "png", "jpg" -> "jpeg"."""
    key = str(name).strip().lower().lstrip(".")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise ExportError(f"unknown image format {name!r}; choose from png, jpeg, webp")
    return key


# ---------------------------------------------------------------- images


def encode_image(image: Image.Image, fmt: str, parameters: str | None, quality: int = 95) -> bytes:
    """The image encoded as `fmt` carrying `parameters` (None: no text) where A1111 puts it.

    JPEG has no alpha: a transparent image is laid on white first. `quality` (1-100) applies to
    JPEG and WebP; PNG is lossless.
    """
    fmt = image_format(fmt)
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ExportError(f"quality must be a whole number from 1 to 100, got {quality!r}")
    if fmt == "png":
        if parameters is None:
            buf = BytesIO()
            image.save(buf, format="PNG")
            return buf.getvalue()
        return infotext.png_bytes(image, parameters)
    exif = b"" if parameters is None else exif_user_comment(parameters)
    if fmt == "jpeg":
        if len(exif) > JPEG_MAX_EXIF:
            raise ExportError(f"the parameters text is too long for a JPEG's EXIF block ({len(exif):,} "
                              f"bytes; the limit is {JPEG_MAX_EXIF:,}); save it as PNG or WebP")
        image = _rgb(image)
    buf = BytesIO()
    image.save(buf, format=fmt.upper(), quality=quality, exif=exif)
    return buf.getvalue()


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def exif_user_comment(text: str) -> bytes:
    """An EXIF block (with its "Exif\\0\\0" header) holding only `text` as the UserComment.

    Layout (TIFF 6.0 section 2, EXIF 2.3 section 4.6): big-endian header "MM", 42, offset 8; IFD0
    with one entry, the Exif IFD pointer (LONG); the Exif IFD with one entry, UserComment
    (UNDEFINED, count = its length, stored after the IFD); each IFD ends with a zero next-IFD offset.
    """
    comment = b"UNICODE\0" + text.encode("utf-16-be")
    ifd_size = 2 + 12 + 4  # entry count, one 12-byte entry, next-IFD offset
    ifd0 = 8
    exif_ifd = ifd0 + ifd_size
    data = exif_ifd + ifd_size
    header = b"MM" + struct.pack(">HI", 42, ifd0)
    ifd0_bytes = struct.pack(">HHHIII", 1, EXIF_IFD, _TIFF_LONG, 1, exif_ifd, 0)
    exif_bytes = struct.pack(">HHHIII", 1, USER_COMMENT, _TIFF_UNDEFINED, len(comment), data, 0)
    return b"Exif\0\0" + header + ifd0_bytes + exif_bytes + comment


# ---------------------------------------------------------------- zip bundles


def write_zip(path: str | os.PathLike[str], members: Mapping[str, bytes | os.PathLike[str]]) -> Path:
    """Write a zip of `members` ({name in the zip: bytes or a file to copy}) to `path`, atomically.

    Names are relative POSIX paths ("cells/000-euler.png"); images are stored as they are,
    everything else (JSON, CSV, text) deflated. The file appears under its name only when complete.
    """
    path = Path(path)
    checked = {_member_name(name): value for name, value in members.items()}
    for name, value in checked.items():
        if not isinstance(value, (bytes, bytearray, os.PathLike)):
            raise ExportError(f"zip member {name!r} must be bytes or a file path, got {type(value).__name__}")
        if isinstance(value, os.PathLike) and not Path(value).is_file():
            raise ExportError(f"zip member {name!r}: no such file {str(value)!r}")
    stamp = time.localtime()[:6]
    with infotext.atomic_file(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name, value in checked.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED if name.lower().endswith(STORED_SUFFIXES) \
                else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            data = bytes(value) if isinstance(value, (bytes, bytearray)) else None
            if data is not None:
                zf.writestr(info, data)
            else:
                with open(value, "rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    return path


def _member_name(name: str) -> str:
    """A safe name inside the zip: relative, forward slashes, no "..", nothing empty."""
    text = str(name).replace("\\", "/")
    parts = PurePosixPath(text).parts
    if not text or text.startswith("/") or not parts or any(p in ("..", ".") for p in parts) \
            or ":" in parts[0]:
        raise ExportError(f"zip member name {name!r} must be a relative path without '..', "
                          f"like 'cells/000-euler.png'")
    return "/".join(parts)
