"""Reading A1111 infotext back: from an image file to its `parameters` text, to its fields, to cell settings.

This module owns the reading side of what report/infotext.py writes (and what A1111 v1.10.1 writes):

    read_parameters(source) -> str | None      the text of a PNG `parameters` chunk, else of a
                                                JPEG/WebP EXIF UserComment, else of a comment
    parse_parameters(text) -> dict              prompt, negative_prompt and the "Key: value" fields
    to_cell_settings(parsed) -> dict            the CellSpec fields the text gives
    settings_from_image(source) -> (kind, dict) the CellSpec fields an A1111, this app's or
                                                ComfyUI's image carries (report/comfyui.py reads
                                                ComfyUI's "prompt"/"workflow" chunks)

The text format (A1111's PNG Info; see report/infotext.py for the writer):

    <prompt, any number of lines>
    Negative prompt: <negative prompt, any number of lines>      (only when there is one)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, ...

The last line is the fields line when at least three "Key: value" pairs match in it (A1111's
rule); a value is either JSON-quoted ("...", for values with commas, colons or newlines) or runs
to the next comma. Unlike A1111's reader, prompt lines are kept exactly as written (A1111 strips
spaces from each line), so a prompt survives a write/read round trip. The format itself cannot
tell a prompt line that begins with "Negative prompt:" from the start of the negative prompt; such
a line starts the negative prompt, as in A1111.

EXIF UserComment (EXIF 2.3, section 4.6.5): an 8-byte character code, then the text. A1111 writes
"UNICODE\\0" + UTF-16 big-endian (piexif's helper); other tools write little-endian, so the byte
order is taken from a byte-order mark, else from where the zero high bytes of ASCII characters sit.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

import samplers
from report import infotext
from samplers import schedules

EXIF_IFD = 0x8769  # the Exif sub-IFD pointer in IFD0 (EXIF 2.3, 4.6.3)
USER_COMMENT = 0x9286  # UserComment in the Exif IFD (EXIF 2.3, 4.6.5)
NEGATIVE_PREFIX = "Negative prompt:"

# A1111's pattern for one field: a key of word characters, spaces, "-" and "/", a colon, then a
# JSON-quoted value or anything up to the next comma.
_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
# Fields A1111 shows as numbers; all others stay text (a model hash of digits keeps its zeros).
INT_FIELDS = {"Steps", "Seed", "Clip skip", "Hires steps", "Variation seed", "ENSD"}
FLOAT_FIELDS = {"CFG scale", "Eta", "Eta DDIM", "Sigma noise", "Sigma churn", "Sigma tmin", "Sigma tmax",
                "Schedule rho", "Schedule max sigma", "Schedule min sigma", "Denoising strength",
                "Hires upscale", "Variation seed strength", *infotext.FLOW_KEYS.values()}
# The writer's names for sampler options, turned around (A1111's names, e.g. "Sigma noise").
_OPTION_NAMES = {key: option for option, key in infotext.OPTION_KEYS.items()}
_DDIM_ETA_KEYS = {key: sampler for sampler, key in infotext.DDIM_ETA.items()}
_CHARSETS = {b"ASCII\0\0\0": "ascii", b"UNICODE\0": "unicode", b"\0" * 8: "undefined"}


class InfotextError(ValueError):
    """A source that is not a readable image, or text whose settings cannot become a cell."""


# ---------------------------------------------------------------- images -> settings


def settings_from_image(source: str | os.PathLike[str] | bytes) -> tuple[str, dict[str, Any]]:
    """("comfyui" or "a1111", the CellSpec fields) of an image ComfyUI, A1111 or this app saved.

    A ComfyUI "prompt" (or "workflow") text chunk is read first, then A1111's parameters text.
    Raises InfotextError saying what is wrong: not an image, no settings in it, a malformed or
    oversized chunk, a sampler or scheduler name that is not known.
    """
    from report.comfyui import ComfyUIError, read_comfyui

    with _open(source) as image:
        try:
            texts = dict(getattr(image, "text", None) or image.info)
        except (ValueError, OSError) as err:  # e.g. Pillow's limit on decompressed text chunks
            raise InfotextError(f"the image's text chunks cannot be read ({err})") from None
        try:
            comfy = read_comfyui(texts)
        except ComfyUIError as err:
            raise InfotextError(str(err)) from None
        if comfy is not None:
            return "comfyui", comfy
        text = _from_image(image)
    if not text:
        raise InfotextError("the image carries no generation settings: no A1111 'parameters' text and "
                            "no ComfyUI 'prompt' or 'workflow' chunk")
    return "a1111", to_cell_settings(parse_parameters(text))


# ---------------------------------------------------------------- images -> text


def read_parameters(source: str | os.PathLike[str] | bytes | Image.Image) -> str | None:
    """The generation parameters an image carries, or None when it carries none.

    `source` is a file path, the file's bytes, or an open PIL image. Looks in a PNG text chunk
    named "parameters" (tEXt, zTXt or iTXt), then the EXIF UserComment (JPEG, WebP, and PNG eXIf),
    then a plain comment (JPEG COM, GIF comment), as A1111's PNG Info does.
    """
    if isinstance(source, Image.Image):
        return _from_image(source)
    with _open(source) as image:
        return _from_image(image)


def _open(source: str | os.PathLike[str] | bytes) -> Image.Image:
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return Image.open(io.BytesIO(bytes(source)))
        if isinstance(source, (str, os.PathLike)):
            return Image.open(Path(source))
    except FileNotFoundError as err:
        raise InfotextError(f"no such file: {str(source)!r}") from err
    except (UnidentifiedImageError, OSError) as err:
        raise InfotextError(f"not an image Pillow can read ({err}); give a PNG, JPEG or WebP file") from err
    raise InfotextError(f"read_parameters takes a path, bytes or a PIL image, not {type(source).__name__}")


def _from_image(image: Image.Image) -> str | None:
    # PngImageFile.text also reads text chunks stored after the image data.
    texts = getattr(image, "text", None) or image.info
    text = texts.get(infotext.PNG_KEY)
    if isinstance(text, str) and text:
        return text
    comment = _exif_user_comment(image)
    if comment:
        return comment
    other = image.info.get("comment")
    if isinstance(other, bytes):
        other = other.decode("utf-8", errors="replace")
    return other or None


def _exif_user_comment(image: Image.Image) -> str | None:
    try:
        raw = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: no usable comment
        return None
    if raw is None:
        return None
    if isinstance(raw, str):  # written with the ASCII type instead of UNDEFINED
        return raw.rstrip("\0") or None
    return decode_user_comment(bytes(raw)) or None


def decode_user_comment(data: bytes) -> str:
    """An EXIF UserComment's text: the 8-byte character code says how the rest is encoded.

    "UNICODE": UTF-16 (byte order from a BOM, else guessed, big-endian on a tie as piexif writes);
    "ASCII" and undefined (8 zero bytes): read as UTF-8, which ASCII is part of; no known code:
    the whole value as UTF-8. Trailing NULs (padding) are dropped.
    """
    charset = _CHARSETS.get(data[:8])
    if charset == "unicode":
        text = _utf16(data[8:])
    elif charset is not None:
        text = data[8:].decode("utf-8", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\0")


def _utf16(data: bytes) -> str:
    if data[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return data.decode("utf-16", errors="replace")
    data = data[: len(data) // 2 * 2]
    # ASCII in big-endian UTF-16 has its zero byte first (even offsets), in little-endian second.
    little = data[1::2].count(0) > data[0::2].count(0)
    first, second = ("utf-16-le", "utf-16-be") if little else ("utf-16-be", "utf-16-le")
    for codec in (first, second):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode(first, errors="replace")


# ---------------------------------------------------------------- text -> fields


def parse_parameters(text: str) -> dict[str, Any]:
    """The parts of a `parameters` text: {"prompt", "negative_prompt", then each field}.

    Fields keep A1111's names ("Steps", "CFG scale", "Schedule type"); "Size: 512x768" becomes
    "width" and "height". Steps, Seed, CFG scale and the other fields A1111 treats as numbers are
    ints/floats (left as text if they do not parse); every other value is text, JSON-unquoted.
    A repeated key keeps its last value, as in A1111.
    """
    if not isinstance(text, str):
        raise InfotextError(f"parameters must be text, got {type(text).__name__}")
    *lines, last = text.strip().split("\n")
    fields: dict[str, Any] = {}
    if len(_FIELD.findall(last)) >= 3:
        fields = parse_fields(last)
    else:
        lines.append(last)
    prompt, negative = _split_prompts(lines)
    return {"prompt": prompt, "negative_prompt": negative, **fields}


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    for i, line in enumerate(lines):
        if line.startswith(NEGATIVE_PREFIX):
            first = line[len(NEGATIVE_PREFIX):]
            # The writer puts one space after the colon; further spaces belong to the prompt.
            first = first[1:] if first.startswith(" ") else first
            return "\n".join(lines[:i]), "\n".join([first, *lines[i + 1:]])
    return "\n".join(lines), ""


def parse_fields(line: str) -> dict[str, Any]:
    """The "Key: value, ..." line as a dict (see parse_parameters for the value types)."""
    out: dict[str, Any] = {}
    for key, raw in _FIELD.findall(line):
        key = key.strip()
        value = _unquote(raw)
        if key == "Size" and _SIZE.match(value):
            width, height = _SIZE.match(value).groups()
            out["width"], out["height"] = int(width), int(height)
            continue
        out[key] = _number(key, value)
    return out


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return raw
        return value if isinstance(value, str) else raw
    return raw.strip()


def _number(key: str, value: str) -> Any:
    try:
        if key in INT_FIELDS:
            return int(value)
        if key in FLOAT_FIELDS:
            return float(value)
    except ValueError:
        pass
    return value


# ---------------------------------------------------------------- fields -> cell settings


def to_cell_settings(parsed: dict[str, Any]) -> dict[str, Any]:
    """The CellSpec fields a parsed text gives: prompt, negative_prompt, sampler, schedule, steps,
    cfg, seed, width, height, shift and guidance (flow models), model (A1111's label: file name
    without extension) and
    sampler_options (sorted (name, value) pairs, as CellSpec keeps them). Fields the text does not
    have are left out.

    The schedule is "Schedule type" when given; otherwise an old combined sampler name
    ("DPM++ 2M Karras") gives it, else it is "Automatic". Sampler options come from A1111's names
    ("Eta", "Sigma noise", "Eta DDIM") or the option's own name, kept only when the sampler takes
    that option, and typed like the option's default. Raises InfotextError for an unknown sampler
    or schedule, or a Steps/Seed/CFG scale that is not a number.
    """
    out: dict[str, Any] = {"prompt": parsed.get("prompt", ""),
                           "negative_prompt": parsed.get("negative_prompt", "")}
    for key, name, kind in (("Steps", "steps", int), ("CFG scale", "cfg", float), ("Seed", "seed", int),
                            ("width", "width", int), ("height", "height", int)):
        if key in parsed:
            out[name] = _typed(key, parsed[key], kind)
    if "Model" in parsed:
        out["model"] = str(parsed["Model"])
    for name, key in infotext.FLOW_KEYS.items():  # flow models: "Shift", "Distilled CFG Scale"
        if key in parsed:
            out[name] = _typed(key, parsed[key], float)
    if "Sampler" in parsed:
        info, schedule = _sampler(str(parsed["Sampler"]), parsed.get("Schedule type"))
        out["sampler"], out["schedule"] = info.name, schedule
        out["sampler_options"] = _options(info, parsed)
    return out


def _typed(key: str, value: Any, kind: type) -> Any:
    what = "a whole number" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind is int and not float(value).is_integer()):
        raise InfotextError(f"{key} must be {what}, got {value!r}")
    return kind(value)


def _sampler(name: str, schedule: Any) -> tuple[samplers.SamplerInfo, str]:
    try:
        info, implied = samplers.resolve(name)
        if schedule is not None:
            return info, schedules.canonical(str(schedule))
    except ValueError as err:
        raise InfotextError(f"cannot read the settings: {err}") from err
    return info, implied or "Automatic"


def _options(info: samplers.SamplerInfo, parsed: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    found: dict[str, Any] = {}
    for key, value in parsed.items():
        if key in _DDIM_ETA_KEYS:
            option = "eta" if _DDIM_ETA_KEYS[key] == info.name else None
        else:
            option = _OPTION_NAMES.get(key, key)
        if option in info.options and option != "scheduler_config":
            found[option] = _option_value(value, info.options[option])
    return tuple(sorted(found.items()))


def _option_value(value: Any, default: Any) -> Any:
    """A written option value back in its default's type ("True" -> True, "4" -> 4, "0.5" -> 0.5)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if isinstance(default, bool) or text in ("True", "False"):
        return {"true": True, "false": False}.get(text.lower(), text)
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        return float(number) if isinstance(default, float) else number
    return _literal(text)


def _literal(text: str) -> Any:
    """Lists and the like written with str() (e.g. Restart's restart_list), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
