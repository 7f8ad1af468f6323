"""A fault corpus written by the tests (issue #7): one COCO person-keypoints json and its images, covering bad files,
odd image modes, EXIF orientation, degenerate annotations and extreme instance counts, plus what each must produce.

Every pixel is synthetic (``ocp_dali.SyntheticScenes`` renders, flat colours, random bytes); nothing comes from
real data. Deterministic: the same files on every call. About 2 s and 2 MB.

Dataset indices: ``CocoInstances`` orders images by id; the corpus gives ids 1, 2, ... in the order written, so the
dataset index of image id ``k`` is ``k - 1``. Every field below uses dataset indices.
"""
from __future__ import annotations

import io
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ocp_dali import CocoInstances, SyntheticScenes
from ocp_dali.data.coco import COCO_KEYPOINT_FLIP
from ocp_dali.data.rle import encode_mask

K = len(COCO_KEYPOINT_FLIP)  # COCO's 17 person keypoints
KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
]
PERSON = 1
H, W = 120, 160  # displayed size of most corpus images
JPEG_TOL = 6.0  # mean absolute difference allowed between a decoded JPEG and the array it was encoded from


@dataclass
class Corpus:
    """What ``write_fault_corpus`` wrote and what each image and annotation must produce.

    Attributes:
        ann_file: the COCO json (person category with COCO's 17 keypoint names).
        img_dir: the image folder (``CocoInstances(ann_file, img_dir)``).
        index: case name -> dataset index, for every image (e.g. ``"exif6"``, ``"truncated_jpeg"``, ``"many"``).
        bad_images: dataset index -> substring of the ``DataError`` message that ``CocoInstances.probe``,
            ``read_image`` and ``load`` raise for it (the message also names the file).
        good: dataset indices that decode and augment, sorted.
        basket_pool: the good indices a test should draw paste sources from (all good ones but the 8k image).
        expected_pixels: dataset index -> ``((H, W, 3) uint8 RGB, tolerance)``: the displayed pixels the image was
            encoded from; ``decode_image`` must give them exactly (tolerance 0) or within a mean absolute
            difference of ``tolerance`` (lossy JPEG).
        skipped_anns: annotation id -> substring of its ``Skip.reason``.
        orphan_anns: ids among ``skipped_anns`` whose skip names the json (their ``image_id`` is not an image of
            it); the other skips name their image's file.
        ann: case name -> annotation id of annotations that must be *kept* (e.g. ``"border_keypoints"``,
            ``"self_intersecting"``, ``"partly_outside"``, ``"crowd_rle"``, ``"crowd_polygon"``).
        crowd_anns: ids of the crowd annotations (ignore regions, never instances).
        instances: dataset index -> number of instances ``meta(i)`` must list (good images only).
        border_keypoints: the (x, y) of the labelled keypoints of ``ann["border_keypoints"]``, on the border of
            its ``W x H`` image.
    """

    ann_file: Path
    img_dir: Path
    index: dict[str, int] = field(default_factory=dict)
    bad_images: dict[int, str] = field(default_factory=dict)
    good: list[int] = field(default_factory=list)
    basket_pool: list[int] = field(default_factory=list)
    expected_pixels: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)
    skipped_anns: dict[int, str] = field(default_factory=dict)
    orphan_anns: set[int] = field(default_factory=set)
    ann: dict[str, int] = field(default_factory=dict)
    crowd_anns: set[int] = field(default_factory=set)
    instances: dict[int, int] = field(default_factory=dict)
    border_keypoints: list[tuple[float, float]] = field(default_factory=list)


class GoodBaskets(CocoInstances):
    """``CocoInstances`` whose paste baskets come from ``pool`` only, so that dataset-level tests of one image do
    not fail on a bad *source* image (what a loader does about bad sources is the loader's business)."""

    def __init__(self, corpus: Corpus, pool: list[int] | None = None) -> None:
        super().__init__(corpus.ann_file, corpus.img_dir)
        self.pool = list(corpus.basket_pool if pool is None else pool)

    def basket_indices(self, rng: np.random.Generator, index: int, size: int) -> list[int]:
        """``size`` distinct pool indices other than ``index`` (fewer when the pool is smaller)."""
        others = [i for i in self.pool if i != index]
        picks = rng.choice(len(others), size=min(size, len(others)), replace=False) if others else []
        return [others[int(p)] for p in picks]


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    """An EXIF block holding only the orientation tag (0x0112)."""
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def _stored_for_orientation(displayed: np.ndarray, orientation: int) -> np.ndarray:
    """The array to store so that a viewer applying EXIF ``orientation`` shows ``displayed`` (3: turned 180
    degrees; 6: the viewer turns it 90 degrees clockwise; 8: 90 degrees counter-clockwise)."""
    turns = {1: 0, 3: 2, 6: 1, 8: -1}[orientation]  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(np.rot90(displayed, turns))


def _box(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a non-empty (H, W) bool mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


class _Writer:
    """Accumulates the json, the image files and the expectations (ids in the order written)."""

    def __init__(self, root: Path) -> None:
        self.img_dir = root / "images"
        self.img_dir.mkdir(parents=True, exist_ok=True)
        self.corpus = Corpus(ann_file=root / "faults.json", img_dir=self.img_dir)
        self.images: list[dict] = []
        self.anns: list[dict] = []

    def image(self, case: str, file_name: str, data: bytes | None, width: int, height: int) -> int:
        """Write ``data`` (None: no file) and its json entry; returns the dataset index."""
        if data is not None:
            (self.img_dir / file_name).write_bytes(data)
        self.images.append({"id": len(self.images) + 1, "file_name": file_name, "width": width, "height": height})
        index = len(self.images) - 1
        self.corpus.index[case] = index
        return index

    def ann(self, index: int, segmentation: object, *, keypoints: list[float] | None = None,
            bbox: object = "auto", iscrowd: int = 0, category_id: object = PERSON, image_id: int | None = None,
            skip: str | None = None, case: str | None = None, shape: tuple[int, int] = (H, W)) -> int:
        """Add one annotation of image ``index``; ``skip``: the reason substring it must be skipped with."""
        aid = len(self.anns) + 1
        a: dict = {"id": aid, "image_id": self.images[index]["id"] if image_id is None else image_id,
                   "segmentation": segmentation, "iscrowd": iscrowd, "area": 1.0}
        if category_id is not None:
            a["category_id"] = category_id
        if bbox == "auto":
            bbox = [0.0, 0.0, float(shape[1]), float(shape[0])]
        if bbox is not None:
            a["bbox"] = bbox
        if keypoints is not None:
            a["keypoints"] = keypoints
            a["num_keypoints"] = int(sum(1 for v in keypoints[2::3] if v > 0))
        self.anns.append(a)
        if skip is not None:
            self.corpus.skipped_anns[aid] = skip
        if case is not None:
            self.corpus.ann[case] = aid
        if iscrowd:
            self.corpus.crowd_anns.add(aid)
        return aid

    def people(self, index: int, scene: SyntheticScenes, k: int) -> int:
        """Annotations of scene ``k``'s people (compressed RLE, keypoints) on image ``index``; returns the count."""
        s = scene.load(k)
        for m, kp in zip(s.masks, s.keypoints):
            self.ann(index, encode_mask(m), keypoints=kp.ravel().tolist(), bbox=_box(m), shape=m.shape)
        return len(s)

    def finish(self) -> Corpus:
        c = self.corpus
        d = {"info": {"description": "ocp_dali fault corpus (synthetic)"}, "images": self.images,
             "annotations": self.anns,
             "categories": [{"id": PERSON, "name": "person", "supercategory": "person", "keypoints": KEYPOINT_NAMES,
                             "skeleton": []}]}
        c.ann_file.write_text(json.dumps(d))  # NaN is written as NaN: Python's json reads it back
        c.good = sorted(i for i in range(len(self.images)) if i not in c.bad_images)
        c.basket_pool = [i for i in c.good if i != c.index["huge"]]
        return c


def write_fault_corpus(root: Path) -> Corpus:
    """Write the corpus into ``root`` (``root/faults.json``, ``root/images/``) and return its expectations."""
    w = _Writer(Path(root))
    c = w.corpus
    scene = SyntheticScenes(num_images=12, seed=7, image_size=(H, W), max_people=4)
    rng = np.random.default_rng(7)

    def good(case: str, file_name: str, data: bytes, k: int | None, expected: np.ndarray | None,
             tol: float) -> int:
        """A good H x W image with the people of scene ``k`` (None: no annotations)."""
        index = w.image(case, file_name, data, W, H)
        c.instances[index] = 0 if k is None else w.people(index, scene, k)
        if expected is not None:
            c.expected_pixels[index] = (expected, tol)
        return index

    def bad(case: str, file_name: str, data: bytes | None, reason: str, size: tuple[int, int] = (H, W)) -> int:
        """A bad image whose json entry says ``size`` (H, W), with one valid person: a loader must skip it all."""
        index = w.image(case, file_name, data, size[1], size[0])
        c.bad_images[index] = reason
        w.ann(index, [_rect(10, 10, 40, 60)], bbox=[10, 10, 30, 50])
        return index

    # --- good images, every mode; pixels: a scene render (people as striped textures)
    rgb = [scene.render(k) for k in range(8)]
    q95 = dict(quality=95, subsampling=0)  # 4:4:4: the noisy renders lose little, a wrong orientation loses a lot
    good("jpeg_rgb", "rgb.jpg", _encode(Image.fromarray(rgb[0]), "JPEG", **q95), 0, rgb[0], JPEG_TOL)
    good("png_rgb", "rgb.png", _encode(Image.fromarray(rgb[1]), "PNG"), 1, rgb[1], 0.0)
    alpha = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)  # alpha is dropped, never composited
    good("png_rgba", "rgba.png", _encode(Image.fromarray(np.concatenate([rgb[2], alpha], 2), "RGBA"), "PNG"), 2,
         rgb[2], 0.0)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    idx = (rgb[3].astype(np.uint16).sum(2) // 3).astype(np.uint8)
    pim = Image.fromarray(idx, "P")
    pim.putpalette(palette.ravel().tolist())
    good("png_palette", "palette.png", _encode(pim, "PNG"), 3, palette[idx], 0.0)
    gray = (rgb[4].astype(np.uint16).sum(2) // 3).astype(np.uint8)
    gray3 = np.repeat(gray[:, :, None], 3, 2)
    good("png_gray", "gray.png", _encode(Image.fromarray(gray, "L"), "PNG"), 4, gray3, 0.0)
    good("jpeg_gray", "gray.jpg", _encode(Image.fromarray(gray, "L"), "JPEG", **q95), 4, gray3, JPEG_TOL)
    cmyk = np.concatenate([255 - rgb[5], np.zeros((H, W, 1), np.uint8)], 2)  # K = 0: C, M, Y = 255 - R, G, B
    good("jpeg_cmyk", "cmyk.jpg", _encode(Image.fromarray(cmyk, "CMYK"), "JPEG", **q95), 5, rgb[5],
         JPEG_TOL)
    # 16-bit gray: high byte = gray, low byte noise; the rule ">> 8" gives gray back (Pillow's convert would clip)
    g16 = (gray.astype(np.uint16) << 8) | rng.integers(0, 256, (H, W), dtype=np.uint16)
    good("png_16bit", "gray16.png", _encode(Image.fromarray(g16), "PNG"), 4, gray3, 0.0)
    good("bmp", "rgb.bmp", _encode(Image.fromarray(rgb[6]), "BMP"), 6, rgb[6], 0.0)
    # 16-bit RGB: Pillow opens it as 8-bit mode "RGB" (high bytes); only the PNG header says 16 bits
    rgb48 = (rgb[6].astype(np.uint16) << 8) | rng.integers(0, 256, (H, W, 3), dtype=np.uint16)
    good("png_rgb48", "rgb48.png", _png_rgb48(rgb48), 6, rgb[6], 0.0)
    # EXIF orientation: json gives the displayed size; the file stores the turned array
    for o in (3, 6, 8):
        stored = _stored_for_orientation(rgb[7], o)
        good(f"exif{o}", f"exif{o}.jpg", _encode(Image.fromarray(stored), "JPEG", **q95, exif=_exif(o)), 7, rgb[7],
             JPEG_TOL)
    good("png_exif6", "exif6.png", _encode(Image.fromarray(_stored_for_orientation(rgb[7], 6)), "PNG",
                                           exif=_exif(6)), 7, rgb[7], 0.0)

    # --- instance counts: none, 300 small people, only tiny people, one 8192 x 8192 image
    good("empty", "empty.jpg", _encode(Image.fromarray(rgb[0]), "JPEG", quality=90), None, None, 0.0)
    many_h, many_w = 256, 320
    many = w.image("many", "many.jpg", _encode(Image.fromarray(_striped(many_h, many_w, rng)), "JPEG", quality=90),
                   many_w, many_h)
    for r in range(15):
        for q in range(20):
            x0, y0 = 2 + q * 16, 2 + r * 17
            w.ann(many, [_rect(x0, y0 + 4, x0 + 10, y0 + 15), _rect(x0 + 3, y0, x0 + 7, y0 + 4)],
                  bbox=[x0, y0, 10, 15], shape=(many_h, many_w))
    c.instances[many] = 300
    tiny = w.image("tiny", "tiny.png", _encode(Image.fromarray(rgb[1]), "PNG"), W, H)
    for x0 in (10, 60, 110):  # 3 x 3 people: below min_size_paste for any destination of the corpus
        w.ann(tiny, [_rect(x0, 50, x0 + 3, 53)], bbox=[x0, 50, 3, 3])
    c.instances[tiny] = 3
    side = 8192
    flat = np.full((side, side, 3), (90, 140, 60), np.uint8)  # flat colour: a 8k JPEG of a few hundred kB
    flat[1000:6000, 2000:4000] = (200, 80, 80)
    flat[3000:7000, 5000:6500] = (60, 60, 200)
    huge = w.image("huge", "huge.jpg", _encode(Image.fromarray(flat), "JPEG", quality=75), side, side)
    w.ann(huge, [_rect(2000, 1000, 4000, 6000)], bbox=[2000, 1000, 2000, 5000], shape=(side, side))
    w.ann(huge, [_rect(5000, 3000, 6500, 7000)], bbox=[5000, 3000, 1500, 4000], shape=(side, side))
    c.instances[huge] = 2
    del flat

    # --- annotations that are kept: degenerate-looking but valid, crowd regions, keypoints on the border
    poly = good("polygons", "polygons.png", _encode(Image.fromarray(rgb[2]), "PNG"), 2, rgb[2], 0.0)
    w.ann(poly, [[10, 10, 60, 60, 60, 10, 10, 60]], case="self_intersecting")  # a bow tie: two triangles
    w.ann(poly, [_rect(130, 80, 200, 150)], case="partly_outside")  # clipped to the image by the rasteriser
    w.ann(poly, [[1.0, 2.0, 3.0, 4.0], _rect(70, 20, 100, 60)], case="with_2_point_part")  # 2 points: no area
    w.ann(poly, {"size": [H, W], "counts": _uncompressed(_rect_mask(20, 70, 50, 110))}, case="uncompressed_rle")
    c.instances[poly] += 4
    crowd = good("crowd", "crowd.png", _encode(Image.fromarray(rgb[3]), "PNG"), 3, rgb[3], 0.0)
    w.ann(crowd, {"size": [H, W], "counts": _uncompressed(_rect_mask(0, 0, 40, 30))}, iscrowd=1, case="crowd_rle")
    w.ann(crowd, [_rect(120, 90, 159, 119)], iscrowd=1, case="crowd_polygon")
    border = good("border_keypoints", "border.png", _encode(Image.fromarray(rgb[4]), "PNG"), 5, rgb[4], 0.0)
    c.border_keypoints = [(0.0, 60.0), (W - 1.0, 60.0), (float(W), 30.0), (80.0, 0.0), (80.0, H - 1.0),
                          (40.0, float(H)), (float(W), float(H)), (0.0, 0.0)]
    kp = np.zeros((K, 3))
    kp[:len(c.border_keypoints), :2] = c.border_keypoints
    kp[:len(c.border_keypoints), 2] = 2
    w.ann(border, [_rect(20, 5, 140, 115)], keypoints=kp.ravel().tolist(), case="border_keypoints")
    c.instances[border] += 1

    # --- annotations that are skipped (on good images: the image still loads without them)
    nan = math.nan
    full = [_rect(30, 30, 90, 90)]
    on = c.index["png_rgb"]
    w.ann(on, [[10, 10, 20, 20]], skip="no polygon with at least 3 points")
    w.ann(on, [[10, 10, 20, 20, 30]], skip="odd number of coordinates")
    w.ann(on, [[10, nan, 20, 20, 30, 10, 40, 40]], skip="not all finite numbers")
    w.ann(on, [[10, 10, 20, 20, 30, 30]], skip="empty mask")  # collinear: zero area
    w.ann(on, [_rect(500, 500, 600, 600)], skip="empty mask")  # entirely outside the image
    w.ann(on, [_rect(-60, -60, -10, -10)], skip="empty mask")  # entirely outside, negative side
    w.ann(on, None, skip="no segmentation")
    w.ann(on, full, bbox=[nan, 10.0, 20.0, 20.0], skip="is not finite")
    w.ann(on, full, bbox=[10.0, 10.0, -5.0, 20.0], skip="negative size")
    w.ann(on, full, bbox=[10.0, 10.0, 20.0], skip="is not 4 numbers")
    w.ann(on, full, category_id=99, skip="unknown category id 99")
    w.ann(on, full, category_id=None, skip="no category_id")
    w.ann(on, {"size": [H + 1, W], "counts": _uncompressed(_rect_mask(0, 0, 5, 5, H + 1, W))}, skip="RLE size")
    w.ann(on, {"size": [H, W], "counts": [100, 50, H * W - 157]}, skip="RLE counts cover")
    w.ann(on, {"size": [H, W], "counts": [100, -50, H * W - 50]}, skip="non-negative integers")
    small = encode_mask(np.ones((10, 10), bool))["counts"]  # a valid string, for a 10 x 10 mask
    w.ann(on, {"size": [H, W], "counts": small}, skip="RLE counts cover")
    on = c.index["jpeg_rgb"]
    good_kp = [50.0, 50.0, 2.0] * K
    w.ann(on, full, keypoints=good_kp[:-3], skip=f"keypoints must be {3 * K} finite numbers")
    w.ann(on, full, keypoints=[nan] + good_kp[1:], skip=f"keypoints must be {3 * K} finite numbers")
    w.ann(on, full, keypoints=[W + 5.0] + good_kp[1:], skip="outside the")
    w.ann(on, full, keypoints=[-0.5] + good_kp[1:], skip="outside the")
    w.ann(on, full, keypoints=good_kp[:-1] + [3.0], skip="visibility must be 0, 1 or 2")
    orphan = w.ann(on, full, image_id=99999, skip="is not an image of this file")
    c.orphan_anns.add(orphan)

    # --- bad images (each with annotations of its own)
    good_jpeg = _encode(Image.fromarray(rgb[0]), "JPEG", **q95)
    bad("corrupt_jpeg", "corrupt.jpg", b"\xff\xd8" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "cannot identify image")
    bad("truncated_jpeg", "truncated.jpg", good_jpeg[:len(good_jpeg) // 2], "truncated")
    bad("missing", "missing.jpg", None, "image file not found")
    bad("empty_file", "empty_file.jpg", b"", "empty file")
    bad("not_an_image", "text.jpg", b"this is not an image\n" * 20, "cannot identify image")
    png = _encode(Image.fromarray(rgb[1]), "PNG")
    bad("png_no_iend", "no_iend.png", png[:-12], "truncated (PNG has no IEND chunk)")
    bad("truncated_png", "truncated.png", png[:len(png) // 2], "truncated")
    bad("gif", "rgb.gif", _encode(Image.fromarray(rgb[2]).quantize(32), "GIF"), "unsupported format GIF")
    bad("size_mismatch", "size.png", png, f"image is {W}x{H} (after EXIF orientation), annotations say "
        f"{W - 10}x{H - 10}", size=(H - 10, W - 10))
    stored6 = _stored_for_orientation(rgb[7], 6)  # stored W x H = H x W
    bad("exif6_stored_size", "exif6_stored.jpg", _encode(Image.fromarray(stored6), "JPEG", exif=_exif(6)),
        f"image is {W}x{H} (after EXIF orientation), annotations say {H}x{W}", size=(W, H))
    return w.finish()


def _striped(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 background with stripes and noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 7.0)[..., None] * np.array([1.0, -0.5, 0.3])
    return np.clip(base + 40 * np.cos(yy / 5.0)[..., None] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def _rect_mask(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> np.ndarray:
    """(h, w) bool mask of pixels x0 <= x < x1, y0 <= y < y1."""
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _uncompressed(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts (column-major runs, starting with 0s) of an (H, W) bool mask."""
    flat = mask.T.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def _png_rgb48(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of an (H, W, 3) uint16 array (Pillow cannot write one)."""
    h, w, _ = rgb16.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))  # filter 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # depth 16, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def write_invalid_json(root: Path) -> Path:
    """An annotation file that is not valid json (cut off in the middle)."""
    p = Path(root) / "invalid.json"
    p.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}], "annotations": [{"id"')
    return p


def write_not_coco_json(root: Path) -> Path:
    """Valid json that is not a COCO annotation file (a list, no 'images')."""
    p = Path(root) / "not_coco.json"
    p.write_text(json.dumps([{"file": "a.jpg", "boxes": [[1, 2, 3, 4]]}]))
    return p


def write_image_without_size(root: Path) -> tuple[Path, int]:
    """A COCO json with one image entry lacking ``width`` (and its id), for a ``DataError`` at construction."""
    p = Path(root) / "no_width.json"
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10},
                                        {"id": 7, "file_name": "b.png", "height": 10}],
                             "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    return p, 7


def write_no_candidate_corpus(root: Path) -> tuple[Path, Path]:
    """A 3-image dataset where no image has a paste candidate: one empty image, two with only 3 x 3 px people.
    Every sample must come out unchanged (``pasted == 0``). Returns ``(ann_file, img_dir)``."""
    root = Path(root)
    img_dir = root / "no_candidate"
    img_dir.mkdir(parents=True, exist_ok=True)
    scene = SyntheticScenes(num_images=3, seed=11, image_size=(H, W))
    images, anns = [], []
    for k in range(3):
        (img_dir / f"{k}.png").write_bytes(_encode(Image.fromarray(scene.render(k)), "PNG"))
        images.append({"id": k + 1, "file_name": f"{k}.png", "width": W, "height": H})
        for j in range(k):  # image 0: no people; 1 and 2: tiny ones
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": PERSON, "iscrowd": 0,
                         "segmentation": [_rect(20 + 40 * j, 40, 23 + 40 * j, 43)], "bbox": [20 + 40 * j, 40, 3, 3],
                         "area": 9.0})
    ann_file = root / "no_candidate.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": PERSON, "name": "person"}]}))
    return ann_file, img_dir
