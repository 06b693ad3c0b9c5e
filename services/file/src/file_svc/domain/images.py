"""Image work with Pillow: what an uploaded image becomes before it is stored, and thumbnails.

Stored images are re-encoded from their pixels: the EXIF orientation is applied first,
then everything but the pixels, the ICC colour profile (colour, not a privacy concern),
transparency and animation timing is dropped — EXIF (GPS, camera serials), XMP, IPTC,
comments, PNG text chunks. Pixel counts are checked against the service's limit for
every image before it is decoded (a decompression bomb is a few KiB that decode to
gigabytes), per image and per call: nothing global such as ``Image.MAX_IMAGE_PIXELS`` is
changed, so two services (or tests) with different limits never see each other's.

These functions block (decode, resample, encode): callers run them in the image pool.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageSequence, UnidentifiedImageError

from .errors import ImageTooLarge, UnreadableImage, UnsupportedType
from .types import GIF, JPEG, PNG, WEBP, FileType

_PILLOW_FORMAT = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF", WEBP: "WEBP"}
# Phones write some JPEGs as MPO (a JPEG plus depth or preview pictures): read as JPEG,
# the first picture is the photo.
_READ_AS = {"MPO": "JPEG"}
# Every frame of these is decoded (kept animations) or could be: all of them count. An
# animated PNG is one too, even where its acTL chunk sits past the sniffed first 8 KiB.
# MPO's further pictures are never decoded (the first is the photo), so they do not count.
_ANIMATED_FORMATS = ("GIF", "WEBP", "PNG")
_KEPT_INFO = ("icc_profile", "transparency")
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    frames: int


def _open(source: Path, kind: FileType, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as error:  # Pillow's own last line of defence
        raise ImageTooLarge(f"The image decodes to too many pixels: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"The image cannot be read: {error}") from None
    if _READ_AS.get(image.format or "", image.format) != _PILLOW_FORMAT.get(kind):
        image.close()
        raise UnreadableImage(f"The image's structure is not {kind.content_type}.")
    width, height = image.size
    frames = _frames(image)
    if width * height * frames > max_pixels:
        image.close()
        raise ImageTooLarge(
            f"The image has {width}×{height} pixels"
            + (f" in {frames} frames" if frames > 1 else "")
            + f"; at most {max_pixels:,} pixels are accepted."
        )
    if image.format == "PNG" and frames > 1:
        image.close()  # refused like an APNG recognised by its signature
        raise UnsupportedType("Animated PNG (image/apng) is not accepted; send a GIF or WebP.")
    return image


def _frames(image: Image.Image) -> int:
    if _READ_AS.get(image.format or "", image.format) not in _ANIMATED_FORMATS:
        return 1
    return int(getattr(image, "n_frames", 1))


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 when there is none or the EXIF cannot be read.

    EXIF is attacker-written: Pillow's parser raises struct, type, attribute, seek and
    decoding errors on broken blocks (and ``ImageOps.exif_transpose`` more, as it writes
    the block back). The pixels are fine either way, and the EXIF is dropped anyway: an
    image whose EXIF cannot be read is kept as its pixels are stored, without the EXIF.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - any failure of the parser means "no usable EXIF"
        return 1
    return value if type(value) is int and value in _UPRIGHT else 1


# Real colour profiles are a few hundred bytes to a few hundred KiB.
MAX_ICC_BYTES = 1024 * 1024


def _plausible_icc(profile: object) -> bool:
    """An ICC profile's header: its declared size is its size, ``acsp`` at offset 36.
    Anything else in the profile's place (data smuggled past re-encoding) is dropped."""
    return (
        isinstance(profile, bytes)
        and 128 <= len(profile) <= MAX_ICC_BYTES
        and int.from_bytes(profile[:4], "big") == len(profile)
        and profile[36:40] == b"acsp"
    )


def _clean_info(image: Image.Image) -> dict[str, Any]:
    kept = {key: image.info[key] for key in _KEPT_INFO if key in image.info}
    if "icc_profile" in kept and not _plausible_icc(kept["icc_profile"]):
        del kept["icc_profile"]
    image.info = {}
    return kept


def sanitize_image(
    source: Path, target: Path, kind: FileType, *, max_pixels: int, jpeg_quality: int
) -> ImageFacts:
    """Write ``source``'s pixels to ``target`` in the same format, upright, without metadata.

    Raises :class:`ImageTooLarge` (more pixels than ``max_pixels``) or
    :class:`UnreadableImage` (not a decodable image of ``kind``).
    """
    image = _open(source, kind, max_pixels)
    try:
        frames = _frames(image)
        fmt = _PILLOW_FORMAT[kind]
        if frames > 1:
            _save_animation(image, target, fmt)
        else:
            _save_still(image, target, fmt, jpeg_quality)
        with Image.open(target) as written:
            width, height = written.size
        return ImageFacts(width, height, frames)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImage(f"The image cannot be decoded: {error}") from None
    finally:
        image.close()


def _save_still(image: Image.Image, target: Path, fmt: str, jpeg_quality: int) -> None:
    image.load()
    method = _UPRIGHT.get(_orientation(image))
    upright = image.transpose(method) if method is not None else image.copy()
    kept = _clean_info(upright)  # EXIF (with its orientation tag), XMP, comments: gone
    options: dict[str, Any] = {}
    if "icc_profile" in kept:
        options["icc_profile"] = kept["icc_profile"]
    if fmt == "JPEG":
        if upright.mode not in ("RGB", "L", "CMYK"):
            upright = upright.convert("RGB")
        options.update(quality=jpeg_quality, optimize=True)
    elif fmt == "WEBP":
        options.update(quality=jpeg_quality)
    elif "transparency" in kept and upright.mode in ("P", "L", "RGB"):
        options["transparency"] = kept["transparency"]
    upright.save(target, format=fmt, **options)


def _save_animation(image: Image.Image, target: Path, fmt: str) -> None:
    frames: list[Image.Image] = []
    durations: list[int] = []
    loop = image.info.get("loop", 0)
    for frame in ImageSequence.Iterator(image):
        durations.append(int(frame.info.get("duration", 100)))
        copy = frame.copy()
        copy.info = {}
        frames.append(copy)
    first, rest = frames[0], frames[1:]
    first.save(target, format=fmt, save_all=True, append_images=rest, duration=durations, loop=loop)


def thumbnail_webp(source: Path, kind: FileType, size: int, *, max_pixels: int) -> bytes:
    """A WebP at most ``size`` pixels on its longer side (never enlarged), first frame."""
    image = _open(source, kind, max_pixels)
    try:
        image.seek(0)
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much cheaper
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        frame = image.convert("RGBA" if has_alpha else "RGB")
        frame.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        frame.save(out, format="WEBP", quality=80, method=4)
        return out.getvalue()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImage(f"The image cannot be decoded: {error}") from None
    finally:
        image.close()
