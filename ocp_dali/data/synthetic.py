"""Synthetic COCO-like person scenes: the embedded default for the demo, benchmarks and tests.

Statistics imitated (COCO 2017 train images that contain people, rounded):
- image sizes: 640 px on the long side; 640x480 (about 60 %), 480x640 (25 %), 640x427 (15 %);
- people per image: ``1 + Geometric(p=0.3)``, capped at 15 (mean about 3.3; COCO: about 4 non-crowd people per
  person image, with a long tail);
- person size: box height a log-normal fraction of the image height (median 0.3, clipped to [0.06, 0.95]),
  width about 0.4 of the height; people drawn later stand in front (visible = amodal minus later people);
- 17 COCO keypoints placed on the silhouette (v=2, or v=1 where a later person covers them).

Every scene is a pure function of ``(seed, index)``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils

from ocp_dali.data.base import draw_basket, sample_from_annotation
from ocp_dali.data.rle import pack_counts
from ocp_dali.data.coco import COCO_KEYPOINT_FLIP
from ocp_dali.masks import tight_boxes
from ocp_dali.plan import ImageMeta
from ocp_dali.sample import Sample

if TYPE_CHECKING:
    from ocp_dali.data.imageio import ImageHeader

_SIZES = ((480, 640), (640, 480), (427, 640))
_SIZE_P = (0.6, 0.25, 0.15)
PERSON = 1

# keypoints in a unit person frame: x in [-0.5, 0.5] of the width, y in [0, 1] of the height (top = 0)
_KP_FRAME = np.array(
    [(0.0, 0.06), (-0.05, 0.04), (0.05, 0.04), (-0.1, 0.06), (0.1, 0.06),
     (-0.22, 0.2), (0.22, 0.2), (-0.32, 0.38), (0.32, 0.38), (-0.36, 0.52), (0.36, 0.52),
     (-0.12, 0.52), (0.12, 0.52), (-0.14, 0.74), (0.14, 0.74), (-0.15, 0.95), (0.15, 0.95)]
)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 16) -> list[float]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).ravel().tolist()


def _limb(x0: float, y0: float, x1: float, y1: float, half: float) -> list[float]:
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    px, py = -dy / n * half, dx / n * half
    return [x0 + px, y0 + py, x1 + px, y1 + py, x1 - px, y1 - py, x0 - px, y0 - py]


def _person_polygons(x: float, y: float, w: float, h: float, lean: float) -> list[list[float]]:
    """Polygons (head, torso, arms, legs) of a person whose box top-left is (x, y), size (w, h)."""
    cx = x + w / 2
    k = [(cx + fx * w + lean * fy * w, y + fy * h) for fx, fy in _KP_FRAME]
    head = _ellipse(k[0][0], y + 0.07 * h, 0.11 * w, 0.07 * h)
    torso = [k[5][0], k[5][1], k[6][0], k[6][1], k[12][0] + 0.06 * w, k[12][1], k[11][0] - 0.06 * w, k[11][1]]
    limbs = [
        _limb(*k[5], *k[7], 0.07 * w), _limb(*k[7], *k[9], 0.06 * w),
        _limb(*k[6], *k[8], 0.07 * w), _limb(*k[8], *k[10], 0.06 * w),
        _limb(*k[11], *k[13], 0.09 * w), _limb(*k[13], *k[15], 0.08 * w),
        _limb(*k[12], *k[14], 0.09 * w), _limb(*k[14], *k[16], 0.08 * w),
    ]
    return [head, torso, *limbs]


class SyntheticScenes:
    """A dataset of generated person scenes with the ``CocoInstances`` interface.

    Args:
        num_images: dataset length.
        seed: scene seed (independent of the augmentation seed).
        image_size: ``(H, W)`` for every image, or None for COCO's size mix.
        max_people: cap on people per image.
    """

    def __init__(self, num_images: int = 64, seed: int = 0, image_size: tuple[int, int] | None = None,
                 max_people: int = 15) -> None:
        if num_images < 1:
            raise ValueError(f"SyntheticScenes: num_images must be >= 1, got {num_images}")
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.image_size = image_size
        self.max_people = int(max_people)
        self.flip_index = COCO_KEYPOINT_FLIP
        self.classes = ["person"]
        self.skips: list = []
        self._layouts: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.num_images

    def _layout(self, index: int) -> dict:
        if index in self._layouts:
            return self._layouts[index]
        if not 0 <= index < self.num_images:
            raise IndexError(f"SyntheticScenes: index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng([self.seed, index])
        h, w = self.image_size or _SIZES[int(rng.choice(3, p=_SIZE_P))]
        n = min(self.max_people, int(rng.geometric(0.3)))  # >= 1, mean 1/0.3
        rles, kps = [], []
        for _ in range(n):
            ph = float(np.clip(rng.lognormal(math.log(0.3), 0.5), 0.06, 0.95)) * h
            pw = ph * float(rng.uniform(0.32, 0.5))
            x = float(rng.uniform(-0.1 * pw, w - 0.9 * pw))
            y = float(rng.uniform(-0.05 * ph, h - 0.85 * ph))
            lean = float(rng.uniform(-0.15, 0.15))
            polys = _person_polygons(x, y, pw, ph, lean)
            rles.append(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
            cx = x + pw / 2
            kp = np.array([(cx + fx * pw + lean * fy * pw, y + fy * ph, 2.0) for fx, fy in _KP_FRAME], np.float32)
            out = (kp[:, 0] < 0) | (kp[:, 0] > w) | (kp[:, 1] < 0) | (kp[:, 1] > h)
            kp[out] = 0
            kps.append(kp)
        amodal = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool) if rles else np.zeros((0, h, w), bool)
        visible = amodal.copy()
        for i in range(len(visible)):
            if i + 1 < len(visible):
                visible[i] &= ~amodal[i + 1:].any(axis=0)
        keep = [i for i in range(n) if visible[i].sum() >= 0.3 * max(amodal[i].sum(), 1) and visible[i].any()]
        kp_arr = np.stack([kps[i] for i in keep]) if keep else np.zeros((0, 17, 3), np.float32)
        for j, i in enumerate(keep):
            xi = np.clip(kp_arr[j, :, 0].astype(int), 0, w - 1)
            yi = np.clip(kp_arr[j, :, 1].astype(int), 0, h - 1)
            later = amodal[i + 1:].any(axis=0) if i + 1 < n else np.zeros((h, w), bool)
            hidden = (kp_arr[j, :, 2] == 2) & later[yi, xi]  # covered by a person in front
            kp_arr[j, hidden, 2] = 1
        masks = visible[keep]
        lay = dict(h=h, w=w, rng_state=int(rng.integers(2**31)), masks_rle=mask_utils.encode(
            np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))) if keep else [],
            boxes=tight_boxes(masks), keypoints=kp_arr)
        self._layouts[index] = lay
        return lay

    def meta(self, index: int) -> ImageMeta:
        lay = self._layout(index)
        n = len(lay["boxes"])
        return ImageMeta(lay["h"], lay["w"], lay["boxes"], np.full(n, PERSON, np.int64), index, self.flip_index)

    def render(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 pixels of scene ``index``: a noisy gradient, people as striped textures."""
        lay = self._layout(index)
        h, w = lay["h"], lay["w"]
        rng = np.random.default_rng(lay["rng_state"])
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
        t = (xx / w * 0.6 + yy / h * 0.4)[..., None]
        img = c0 * (1 - t) + c1 * t + rng.normal(0, 12, (h, w, 3)).astype(np.float32)
        masks = (mask_utils.decode(lay["masks_rle"]).transpose(2, 0, 1).astype(bool)
                 if len(lay["boxes"]) else np.zeros((0, h, w), bool))
        for m in masks:
            colour = rng.uniform(20, 235, 3)
            stripes = 18 * np.sin(yy[m] / rng.uniform(3, 9))[:, None]
            img[m] = colour + stripes + rng.normal(0, 8, (int(m.sum()), 3))
        return np.clip(img, 0, 255).astype(np.uint8)

    def read_bytes(self, index: int) -> np.ndarray:
        """Scene ``index`` encoded as PNG (lossless: a decoder gives back ``render(index)`` exactly)."""
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.render(index)).save(buf, format="PNG", compress_level=1)
        return np.frombuffer(buf.getvalue(), dtype=np.uint8)

    def probe(self, index: int, data: np.ndarray | bytes | None = None) -> ImageHeader:
        """Header of scene ``index`` as ``read_bytes`` encodes it (8-bit RGB PNG), without rendering it."""
        from ocp_dali.data.imageio import ImageHeader  # Pillow only when images are read

        lay = self._layout(index)
        return ImageHeader(width=lay["w"], height=lay["h"], format="PNG", mode="RGB", orientation=1, bit_depth=8)

    def annotation(self, index: int) -> dict:
        lay = self._layout(index)
        n = len(lay["boxes"])
        return dict(height=lay["h"], width=lay["w"], counts=pack_counts(lay["masks_rle"]),
                    crowd_counts=pack_counts([]), labels=np.full(n, PERSON, np.int64),
                    ann_ids=np.arange(n, dtype=np.int64) + 1000 * index, keypoints=lay["keypoints"],
                    image_id=index, file_name=f"synthetic://{self.seed}/{index}", skipped=[])

    def load(self, index: int) -> Sample:
        return sample_from_annotation(self.render(index), self.annotation(index))

    def basket_indices(self, rng: np.random.Generator, index: int, size: int) -> list[int]:
        return draw_basket(rng, index, len(self), size)
