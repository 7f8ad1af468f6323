"""Random scenes for property-based tests: small images, random masks, keypoints on and off the border."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ocp_dali.config import OCPConfig
from ocp_dali.plan import ImageMeta
from ocp_dali.sample import Sample

K = 5
FLIP = (0, 2, 1, 4, 3)


def random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A non-empty (h, w) bool mask: a rectangle, an ellipse or a noisy blob, sometimes touching the border."""
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.2 * h, 1.2 * h)
    rx, ry = rng.uniform(1, 0.7 * w + 1), rng.uniform(1, 0.7 * h + 1)
    if kind == 0:
        m = (np.abs(xx + 0.5 - cx) <= rx) & (np.abs(yy + 0.5 - cy) <= ry)
    elif kind == 1:
        m = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1
    else:
        m = rng.random((h, w)) < rng.uniform(0.1, 0.9)
    if not m.any():
        m[rng.integers(h), rng.integers(w)] = True
    return m


def random_sample(rng: np.random.Generator, h: int, w: int, n: int, keypoints: bool, tag: int) -> Sample:
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = np.stack([random_mask(rng, h, w) for _ in range(n)]) if n else np.zeros((0, h, w), bool)
    labels = rng.integers(1, 4, n)
    kp = None
    if keypoints:
        kp = np.zeros((n, K, 3), np.float32)
        kp[..., 0] = rng.uniform(0, w, (n, K))
        kp[..., 1] = rng.uniform(0, h, (n, K))
        kp[..., 2] = rng.integers(0, 3, (n, K))
        edge = rng.random((n, K)) < 0.2  # points exactly on the right / bottom edge
        kp[..., 0][edge] = w
        kp[..., 1][rng.random((n, K)) < 0.1] = h
        kp[kp[..., 2] == 0] = 0
    crowd = random_mask(rng, h, w)[None] if rng.random() < 0.3 else None
    return Sample.from_instances(image, masks, labels, keypoints=kp, ann_ids=np.arange(n) + 100 * tag,
                                 crowd_masks=crowd, image_id=tag, file_name=f"scene-{tag}")


@dataclass
class Scene:
    dst: Sample
    sources: list[Sample]
    cfg: OCPConfig
    seed: int

    def metas(self) -> tuple[ImageMeta, list[ImageMeta]]:
        flip = FLIP if self.dst.keypoints is not None else None
        return (ImageMeta.of_sample(self.dst, 0, flip),
                [ImageMeta.of_sample(s, i + 1, flip) for i, s in enumerate(self.sources)])


@st.composite
def scenes(draw, max_side: int = 40) -> Scene:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    h, w = draw(st.integers(4, max_side)), draw(st.integers(4, max_side))
    kp = draw(st.booleans())
    simple = draw(st.integers(0, 4)) == 0
    n_src = 1 if simple else draw(st.integers(1, 3))
    dst = random_sample(rng, h, w, draw(st.integers(0, 6)), kp, 0)
    sources = []
    for t in range(n_src):
        sh, sw = (h, w) if simple and draw(st.booleans()) else (draw(st.integers(4, max_side)), draw(st.integers(4, max_side)))
        sources.append(random_sample(rng, sh, sw, draw(st.integers(0, 6)), kp, t + 1))
    lo = draw(st.integers(0, 2))
    common = dict(
        prob=1.0,
        blend_sigma=draw(st.sampled_from([0.0, 0.0, 0.6, 1.5, 3.0])),
    )
    if simple:
        cfg = OCPConfig.simple(selected=draw(st.booleans()), bbox_occluded_thr=draw(st.sampled_from([0.0, 2.0, 10.0])),
                               mask_occluded_thr=draw(st.sampled_from([0, 5, 300])), **common)
    else:
        cfg = OCPConfig(
            basket_size=n_src,
            paste_num=(lo, lo + draw(st.integers(1, 6))),
            min_size_paste=draw(st.sampled_from([0.0, 0.05, 0.1, 0.3])),
            min_size_occ=draw(st.sampled_from([0.0, 0.01, 0.1, 0.3])),
            targeted_paste_prob=draw(st.sampled_from([0.0, 0.5, 1.0])),
            targeted_paste_buffer=draw(st.sampled_from([-0.3, 0.0, 0.4, 1.0])),
            aug_paste_geom_jitter=draw(st.booleans()),
            aug_paste_img_jitter=draw(st.booleans()),
            **common,
        )
    return Scene(dst, sources, cfg, seed)
