"""Reading encoded images: cheap header probes, one decode rule for every mode, and the bytes a decoder is given.

Formats: JPEG and PNG are the formats datasets use and the ones handed to DALI's decoder as they are. BMP, TIFF,
WEBP and MPO (a JPEG with extra frames, as many cameras write) are accepted when Pillow decodes them, and always
re-encoded before DALI sees them (``bytes_for_decoder``). Any other format is a ``DataError``.

One decode rule (``decode_image``), so the CPU path and the DALI graph see the same pixels:

- EXIF orientation (tag 0x0112) is applied: the result has the *displayed* size. The transposition is the one
  ``ImageOps.exif_transpose`` makes, applied from the tag ``probe_image`` read, so probe and decode always agree;
- every mode becomes 8-bit RGB: gray ``L``/``1`` is replicated to 3 channels; palette ``P``/``PA`` goes through its
  palette; alpha (``LA``, ``RGBA``, ``PA``) is dropped, not composited; ``CMYK`` uses Pillow's CMYK -> RGB;
- 16-bit gray (``I;16``, ``I;16B``, ``I;16L``, and ``I`` as Pillow used to open 16-bit PNGs) keeps the high byte:
  ``value >> 8`` (``I`` is clipped to [0, 65535] first). Pillow's own ``convert`` would clip every value above 255
  to 255, which makes most 16-bit images white. 16-bit RGB PNGs are opened by Pillow as 8-bit ``RGB`` already
  (high byte, the same rule);
- truncated or corrupt data is an error, never a partly grey image (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False).

Limit: a JPEG cut short *and closed with an end-of-image marker* (or damaged inside its compressed data) decodes
without an error in Pillow: libjpeg fills the missing blocks with grey and only warns. Neither the probe nor the
decode can tell. DALI 2.4's CPU decoder does the same (measured; its GPU decoder was not checked).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ocp_dali.errors import DataError

# Formats accepted (Pillow's names). Only PLAIN_FORMATS are ever handed to a decoder as they are.
SUPPORTED_FORMATS = ("JPEG", "PNG", "MPO", "BMP", "TIFF", "WEBP")
PLAIN_FORMATS = ("JPEG", "PNG")
PLAIN_MODES = ("RGB", "L")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_TO_RGB_MODES = ("RGB", "L", "1", "P", "PA", "LA", "RGBA", "RGBX", "RGBa", "La", "CMYK", "YCbCr", "LAB", "HSV")

# Truncation checks look for the end marker this close to the end of the file: writers may pad files with a few
# bytes after it, and searching the whole file would find the end marker of an embedded EXIF thumbnail.
_TAIL_BYTES = 4096
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"  # chunk type and its fixed CRC
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# EXIF orientation -> the transposition that shows the image upright (ImageOps.exif_transpose's table)
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says.

    ``width`` / ``height``: the displayed size, after EXIF orientation (what ``decode_image`` returns).
    ``format``: Pillow's format name (``"JPEG"``, ``"PNG"`` ...). ``mode``: Pillow's mode (``"RGB"``, ``"L"``,
    ``"CMYK"``, ``"I;16"`` ...). ``orientation``: EXIF tag 0x0112 in 1..8, 1 when absent or invalid.
    ``bit_depth``: bits per channel as stored (PNG: from its IHDR chunk, where Pillow reports 16-bit RGB as ``RGB``;
    otherwise 16 for 16-bit modes and 8 for the rest).
    """

    width: int
    height: int
    format: str
    mode: str
    orientation: int = 1
    bit_depth: int = 8


def _as_bytes(data: bytes | np.ndarray) -> bytes:
    """The encoded file as ``bytes`` (``data``: bytes, or a uint8 array such as ``np.fromfile`` gives)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    return bytes(data)


def _open(raw: bytes, path: str) -> Image.Image:
    """``Image.open`` (header only) with every failure as a ``DataError`` naming ``path``."""
    if not raw:
        raise DataError(path, "empty file")
    try:
        return Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as e:  # more than 2 * Image.MAX_IMAGE_PIXELS pixels
        raise DataError(path, f"image too large ({e})") from None
    except UnidentifiedImageError:
        raise DataError(path, "cannot identify image (not an image, or a corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot identify image ({type(e).__name__}: {e})") from None


def _png_exif_block(raw: bytes) -> bytes | None:
    """The data of a PNG's eXIf chunk, found by walking the chunk headers (no decompression), or None.

    Pillow's ``getexif`` on a PNG decodes the whole image first (an eXIf chunk may follow the image data).
    """
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(raw):
        length = int.from_bytes(raw[pos:pos + 4], "big")
        kind = raw[pos + 4:pos + 8]
        if kind == b"eXIf":
            return raw[pos + 8:pos + 8 + length]
        if kind == b"IEND":
            break
        pos += 12 + length  # length, type, data, CRC
    return None


def _orientation(im: Image.Image, fmt: str, raw: bytes) -> int:
    """EXIF orientation tag of an opened image (1 when absent), read without decoding pixels."""
    if fmt == "PNG":
        block = _png_exif_block(raw)
        if block is None:
            return 1
        exif = Image.Exif()
        exif.load(block)
    else:
        exif = im.getexif()  # JPEG, TIFF, WEBP: parsed from the header
    return int(exif.get(0x0112, 1))


def probe_image(data: bytes | np.ndarray, path: str) -> ImageHeader:
    """Header of an encoded image without decoding its pixels, plus cheap truncation checks.

    Args:
        data: the encoded file (bytes, or a uint8 array).
        path: the file's name, for error messages.

    Raises ``DataError(path, ...)``: empty file, unidentifiable header, unsupported format, a JPEG without its
    end-of-image marker or a PNG without its IEND chunk near the end ("truncated"), unreadable EXIF. Corruption
    inside the compressed data is found only by ``decode_image``.
    """
    raw = _as_bytes(data)
    im = _open(raw, path)
    with im:
        fmt = str(im.format)
        if fmt not in SUPPORTED_FORMATS:
            raise DataError(path, f"unsupported format {fmt} (supported: {', '.join(SUPPORTED_FORMATS)})")
        if fmt in ("JPEG", "MPO") and _JPEG_EOI not in raw[-_TAIL_BYTES:]:
            raise DataError(path, "truncated (JPEG has no end-of-image marker)")
        if fmt == "PNG" and _PNG_IEND not in raw[-_TAIL_BYTES:]:
            raise DataError(path, "truncated (PNG has no IEND chunk)")
        try:
            orientation = _orientation(im, fmt, raw)
        except Exception as e:  # Pillow raises assorted errors on malformed EXIF blocks
            raise DataError(path, f"cannot read EXIF ({type(e).__name__}: {e})") from None
        if orientation not in range(1, 9):
            orientation = 1  # exif_transpose ignores values outside 1..8: so do we
        w, h = im.size
        mode = str(im.mode)
    if fmt == "PNG" and raw.startswith(_PNG_SIGNATURE) and len(raw) > 24:
        bit_depth = raw[24]  # IHDR is the first chunk: signature(8) length(4) type(4) width(4) height(4) depth(1)
    else:
        bit_depth = 16 if mode in _SIXTEEN_BIT_MODES else 8
    if orientation >= 5:  # orientations 5..8 turn the image by 90 degrees
        w, h = h, w
    return ImageHeader(int(w), int(h), fmt, mode, orientation, int(bit_depth))


def _to_rgb8(im: Image.Image, path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a loaded Pillow image, by the module's rules (16-bit: high byte)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(im)
        if im.mode == "I":
            gray = np.clip(gray, 0, 65535)
        gray8 = (gray.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if im.mode not in _TO_RGB_MODES:
        raise DataError(path, f"unsupported image mode {im.mode}")
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def decode_image(data: bytes | np.ndarray, path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an encoded image, EXIF orientation applied (H, W: the displayed size).

    Runs ``probe_image``'s checks first, then a full Pillow decode; see the module docstring for the mode rules.
    Raises ``DataError(path, ...)``, e.g. ``"cannot decode image (...)"`` for truncated or corrupt data.
    """
    raw = _as_bytes(data)
    header = probe_image(raw, path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images would be filled with grey "
                           "instead of failing; leave it False")
    try:
        with _open(raw, path) as im:
            im.load()
            if header.orientation != 1:
                im = im.transpose(_ORIENTATION_TRANSPOSE[header.orientation])
            rgb = _to_rgb8(im, path)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    if rgb.shape[:2] != (header.height, header.width):  # a header that lies about the size
        raise DataError(path, f"decoded {rgb.shape[1]}x{rgb.shape[0]}, header says {header.width}x{header.height}")
    return rgb


def check_size(path: str, width: int, height: int, want_width: int, want_height: int) -> None:
    """``DataError`` naming the file when its displayed size (after EXIF orientation) is not the annotations'."""
    if (int(width), int(height)) != (int(want_width), int(want_height)):
        raise DataError(str(path), f"image is {width}x{height} (after EXIF orientation), "
                                   f"annotations say {want_width}x{want_height}")


def needs_reencoding(header: ImageHeader) -> bool:
    """Whether an image must be re-encoded before DALI's decoder sees it.

    Plain (handed over as it is): JPEG or PNG, 8 bits per channel, mode RGB or L, EXIF orientation 1. For those
    DALI's decoder and ``decode_image`` agree on the pixels. Everything else (CMYK, 16-bit, palette, alpha, EXIF
    rotation, other formats) is decoded by ``decode_image`` and re-encoded (``bytes_for_decoder``).
    """
    plain = (header.format in PLAIN_FORMATS and header.bit_depth == 8 and header.mode in PLAIN_MODES
             and header.orientation == 1)
    return not plain


def reencode_png(rgb: np.ndarray) -> np.ndarray:
    """(N,) uint8: an 8-bit RGB PNG of ``rgb`` ((H, W, 3) uint8). Lossless; compression level 1 for speed."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"reencode_png expects (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=1)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def bytes_for_decoder(data: bytes | np.ndarray, path: str, header: ImageHeader | None = None) -> np.ndarray:
    """(N,) uint8 encoded bytes to give DALI's decoder, which then yields exactly ``decode_image(data, path)``
    (up to the decoders' JPEG rounding for plain JPEGs).

    Plain images (``needs_reencoding`` False) are returned as they are (no copy when ``data`` is a uint8 array);
    the others are decoded here and returned as ``reencode_png(decode_image(data, path))``. ``header``: the
    ``probe_image`` result when the caller has it (saves a second probe). Raises ``DataError`` like ``probe_image``
    (and like ``decode_image`` for re-encoded images).
    """
    header = header if header is not None else probe_image(data, path)
    if not needs_reencoding(header):
        if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
            return data
        return np.frombuffer(_as_bytes(data), dtype=np.uint8)
    return reencode_png(decode_image(data, path))
