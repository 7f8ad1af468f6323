"""Large-scale jitter (LSJ) / resize / flip / pad of a whole sample: parameters drawn once, NumPy reference apply.

mmdet's LSJ pipeline (``RandomResize(ratio_range=(0.1, 2.0), keep_ratio) -> RandomCrop(allow_negative_crop)
-> RandomFlip -> Pad``) as one affine map from output pixels to input coordinates, evaluated in Q16 fixed point
like the paste geometry (``ocp_dali.geometry``), so every backend resamples identically: pixels by integer bilinear
interpolation, masks nearest. ``lsj=False`` is a plain keep-ratio resize into the output size (still with the flip
coin), the Mask R-CNN-style path.

On the CPU (NumPy arrays) the resample runs as compiled loops when a C++ compiler is there
(``kernels/geometry_cpu``: the per-pixel functions of the CUDA kernels, so the same bits), only where an output
can be non-zero: the content, not the padding; each mask inside the image of its tight box; only the instances
that stay on the canvas. On the GPU (CuPy arrays, or the emulator's) a whole batch is resampled by the kernels of
``kernels/lsj.cu`` (``apply_lsj_batch``: three launches per batch, the same per-pixel functions, outputs written
straight into one buffer per kind). ``resample_arrays`` / ``sample_affine_arrays`` (NumPy or CuPy) are the oracle
of both, and the fallback without a compiler. Normalisation is not part of the geometry: DALI's
``crop_mirror_normalize`` does it after the stage (or the model's data preprocessor).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, get_args

import numpy as np

from ocp_dali.geometry import Q_ONE
from ocp_dali.keypoints import keep_on_canvas
from ocp_dali.masks import tight_boxes
from ocp_dali.plan import sample_rng
from ocp_dali.sample import Resampled, Sample
from ocp_dali.targets import Targets, absent
from ocp_dali.xp import array_module, to_numpy

LSJ_RATIO_RANGE = (0.1, 2.0)


@dataclass(frozen=True)
class LSJParams:
    """One sample's geometry.

    Attributes:
        out_h, out_w: output canvas (padded) size.
        scale_x, scale_y: resize factors (resized size / input size, per axis, from the rounded resized size).
        crop_x, crop_y: top-left of the crop in the resized image.
        valid_w, valid_h: size of the image content on the canvas (the rest is padding, bottom and right).
        flip: horizontal flip of the content.
        inv_q16: output pixel ``(X, Y)`` centre -> input coordinates ``((a X + b Y + c), (d X + e Y + f)) / 2**16``.
    """

    out_h: int
    out_w: int
    scale_x: float
    scale_y: float
    crop_x: int
    crop_y: int
    valid_w: int
    valid_h: int
    flip: bool
    inv_q16: tuple[int, int, int, int, int, int]

    def forward(self, xy: np.ndarray) -> np.ndarray:
        """Input continuous coordinates (..., 2) -> output continuous coordinates (float64)."""
        x = xy[..., 0] * self.scale_x - self.crop_x
        y = xy[..., 1] * self.scale_y - self.crop_y
        if self.flip:
            x = self.valid_w - x
        return np.stack([x, y], axis=-1)


def canvas_size(output_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` of an output size given as ``S`` (square) or ``(H, W)``."""
    return (output_size, output_size) if isinstance(output_size, int) else (int(output_size[0]), int(output_size[1]))


GeometryKind = Literal["lsj", "fit", "resize"]
Placement = Literal["seed", "paste_first"]
KINDS: tuple[str, ...] = get_args(GeometryKind)
PLACEMENTS: tuple[str, ...] = get_args(Placement)


@dataclass(frozen=True)
class Geometry:
    """The train geometry of a sample, and where the paste happens in it.

    Kinds (each with a horizontal flip of probability ``flip_prob``):
        ``"lsj"``: mmdet's large-scale jitter: ``RandomResize(scale=size, ratio_range)`` keep-ratio,
            ``RandomCrop(size, allow_negative_crop)``, ``Pad(size)``: an ``size`` canvas (the Mask2Former configs).
        ``"fit"``: keep-ratio resize into ``size``, padded to it (LSJ with ratio 1, no crop).
        ``"resize"``: mmdet's multi-scale keep-ratio ``RandomResize(scale=[scales[0], scales[1]])``: the long and
            short edge limits drawn in their ranges, no crop, no padding (the output is the resized image: sizes
            differ per sample; the Mask R-CNN configs).
    Placements:
        ``"seed"``: the seed's order. The destination gets its geometry first and is pasted on at its output size;
            with ``"lsj"`` each source gets its own LSJ draw (the seed's Mask2Former pipeline), folded into the
            paste's warp (``ocp_dali.placement``), with ``"fit"``/``"resize"`` the sources are pasted raw (the
            seed's Mask R-CNN pipeline).
        ``"paste_first"``: an ocp_dali variant: paste at raw size, then the geometry on the result.
    """

    kind: GeometryKind = "lsj"
    size: tuple[int, int] = (1024, 1024)
    ratio_range: tuple[float, float] = LSJ_RATIO_RANGE
    scales: tuple[tuple[int, int], tuple[int, int]] = ((1333, 640), (1333, 800))
    flip_prob: float = 0.5
    placement: Placement = "seed"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Geometry: kind must be one of {KINDS}, got {self.kind!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"Geometry: placement must be one of {PLACEMENTS}, got {self.placement!r}")
        # configs give lists (and ints for squares): store tuples, so geometries compare and pickle alike
        object.__setattr__(self, "size", canvas_size(self.size if isinstance(self.size, int) else tuple(self.size)))
        object.__setattr__(self, "ratio_range", tuple(float(v) for v in self.ratio_range))
        object.__setattr__(self, "scales", tuple(tuple(int(v) for v in s) for s in self.scales))
        if len(self.scales) != 2 or any(len(s) != 2 or min(s) <= 0 for s in self.scales):
            raise ValueError(f"Geometry: scales must be two (long, short) pairs, got {self.scales}")
        if min(self.size) <= 0 or not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            raise ValueError(f"Geometry: bad size {self.size} or ratio_range {self.ratio_range}")

    @classmethod
    def lsj(cls, size: int | tuple[int, int] = 1024, ratio_range: tuple[float, float] = LSJ_RATIO_RANGE,
            placement: Placement = "seed") -> "Geometry":
        return cls("lsj", canvas_size(size), tuple(ratio_range), placement=placement)  # type: ignore[arg-type]

    @classmethod
    def fit(cls, size: int | tuple[int, int] = 1024, placement: Placement = "seed") -> "Geometry":
        return cls("fit", canvas_size(size), placement=placement)

    @classmethod
    def resize(cls, scales=((1333, 640), (1333, 800)), placement: Placement = "seed") -> "Geometry":
        return cls("resize", scales=scales, placement=placement)

    @property
    def seed_order(self) -> bool:
        """The destination gets its geometry before the paste."""
        return self.placement == "seed"

    def draw(self, rng: np.random.Generator, h: int, w: int) -> "LSJParams":
        """The geometry of one ``h x w`` sample (always 4 numbers from ``rng``: ratio or short edge, crop x or long
        edge, crop y, flip)."""
        u = rng.random(4)
        if self.kind == "resize":
            (l0, s0), (l1, s1) = self.scales
            lo_long, hi_long = sorted((max(l0, s0), max(l1, s1)))
            lo_short, hi_short = sorted((min(l0, s0), min(l1, s1)))
            long_edge = lo_long + min(int(u[1] * (hi_long - lo_long + 1)), hi_long - lo_long)
            short_edge = lo_short + min(int(u[0] * (hi_short - lo_short + 1)), hi_short - lo_short)
            f = min(long_edge / max(h, w), short_edge / min(h, w))
            rh, rw = max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))  # mmcv's rescale_size rounding
            return lsj_params(h, w, (rh, rw), (rh, rw), (0, 0), bool(u[3] < self.flip_prob))
        out_h, out_w = self.size
        lo, hi = self.ratio_range if self.kind == "lsj" else (1.0, 1.0)
        f = (lo + (hi - lo) * float(u[0])) * min(out_h / h, out_w / w)
        rh, rw = max(1, int(round(h * f))), max(1, int(round(w * f)))
        cx = min(int(u[1] * (max(rw - out_w, 0) + 1)), max(rw - out_w, 0))
        cy = min(int(u[2] * (max(rh - out_h, 0) + 1)), max(rh - out_h, 0))
        return lsj_params(h, w, (rh, rw), (out_h, out_w), (cx, cy), bool(u[3] < self.flip_prob))


def lsj_params(h: int, w: int, resized: tuple[int, int], out_size: tuple[int, int], crop: tuple[int, int],
               flip: bool) -> LSJParams:
    """``LSJParams`` of an ``h x w`` image resized to ``resized`` ``(rh, rw)``, cropped at ``crop`` ``(cx, cy)``,
    flipped or not, on an ``out_size`` ``(H, W)`` canvas."""
    (rh, rw), (out_h, out_w), (cx, cy) = resized, out_size, crop
    sx, sy = rw / w, rh / h
    vw, vh = min(out_w, rw - cx), min(out_h, rh - cy)
    # output X (centre X + 0.5) -> content x_c = X (or vw - 1 - X flipped) -> resized x_c + cx -> input
    # ((x_c + cx + 0.5) / sx - 0.5 in pixel-index space; +0.5 again for the centre convention of the sampler)
    ax = (-1.0 if flip else 1.0) / sx
    cxx = ((vw - 1 if flip else 0) + cx + 0.5) / sx
    ay = 1.0 / sy
    cyy = (cy + 0.5) / sy
    inv = (ax, 0.0, cxx, 0.0, ay, cyy)
    inv_q = tuple(int(round(v * Q_ONE)) for v in inv)
    return LSJParams(out_h, out_w, sx, sy, cx, cy, vw, vh, flip, inv_q)  # type: ignore[arg-type]


def as_geometry(geometry: "Geometry | bool | None", output_size: int | tuple[int, int] = 1024,
                lsj: bool = True) -> "Geometry | None":
    """A ``Geometry`` from the loaders' arguments: a ``Geometry`` as it is; True: LSJ (``lsj``) or fit into
    ``output_size`` in the seed's placement; False / None: none (outputs at the image's own size)."""
    if isinstance(geometry, Geometry):
        return geometry
    if not geometry:
        return None
    return Geometry.lsj(output_size) if lsj else Geometry.fit(output_size)


def lsj_for_sample(seed: int, epoch: int, index: int, h: int, w: int, geometry: "Geometry") -> LSJParams:
    """The geometry of dataset sample ``index`` of an ``h x w`` image: drawn from its own stream of
    ``(seed, epoch, index)`` (``stream=1``), so the DALI workers and the reference draw the same."""
    return geometry.draw(sample_rng(seed, epoch, index, stream=1), h, w)


def sample_lsj(rng: np.random.Generator, h: int, w: int, out_size: tuple[int, int], *, lsj: bool = True,
               ratio_range: tuple[float, float] = LSJ_RATIO_RANGE, flip_prob: float = 0.5) -> LSJParams:
    """Draw the LSJ (``lsj=False``: fit) geometry of one ``h x w`` sample onto an ``out_size`` canvas."""
    kind = "lsj" if lsj else "fit"
    return Geometry(kind, out_size, tuple(ratio_range), flip_prob=flip_prob).draw(rng, h, w)  # type: ignore[arg-type]


def sample_affine(image, masks: list, inv_q16: tuple[int, ...], out_h: int, out_w: int, valid_w: int,
                  valid_h: int) -> tuple:
    """Resample an (H, W, 3) uint8 image (integer bilinear, clamped edges) and (N, H, W) bool stacks (nearest)
    onto an ``out_h x out_w`` canvas; outside ``[0, valid_w) x [0, valid_h)`` is padding (0 / False).
    NumPy or CuPy arrays (the same arithmetic, so both give identical results); NumPy arrays under an axis-aligned
    map go through the compiled CPU loops when they are available (``compiled_loops``), with the same bits."""
    fast = compiled_loops(image, inv_q16)
    if fast is None:
        return sample_affine_arrays(image, masks, inv_q16, out_h, out_w, valid_w, valid_h)
    out_img = fast.lsj_image(image, inv_q16, out_h, out_w, valid_w, valid_h)
    out_masks = [fast.lsj_masks(stack, np.arange(len(stack)), inv_q16, out_h, out_w, valid_w, valid_h)[0]
                 for stack in masks]
    return out_img, out_masks


def compiled_loops(image: Any, inv_q16: tuple[int, ...]) -> ModuleType | None:
    """``ocp_dali.kernels.geometry_cpu`` for a NumPy ``image`` under an axis-aligned map (``inv_q16`` b = d = 0,
    as every LSJ map is) when its compiled loops are available, else None (NumPy / CuPy arrays then)."""
    from ocp_dali.reference import cpu_loops

    if array_module(image) is not np or int(inv_q16[1]) != 0 or int(inv_q16[3]) != 0:
        return None
    return cpu_loops()


def sample_affine_arrays(image, masks: list, inv_q16: tuple[int, ...], out_h: int, out_w: int, valid_w: int,
                         valid_h: int) -> tuple:
    """``sample_affine`` in array code, NumPy or CuPy: every canvas pixel of the image and of every mask. The
    CuPy path, and the oracle of the compiled loops."""
    from ocp_dali.reference import bilinear_q16, nearest_q16

    xp = array_module(image)
    h, w = image.shape[:2]
    a, b, c, d, e, f = (int(v) for v in inv_q16)
    xs = xp.arange(valid_w, dtype=xp.int64)[None, :]
    ys = xp.arange(valid_h, dtype=xp.int64)[:, None]
    u = xp.broadcast_to(a * xs + b * ys + c, (valid_h, valid_w))
    v = xp.broadcast_to(d * xs + e * ys + f, (valid_h, valid_w))
    out_img = xp.zeros((out_h, out_w, 3), dtype=xp.uint8)
    out_img[:valid_h, :valid_w] = bilinear_q16(image, u, v)
    iu, iv = nearest_q16(u, v, h, w)
    out_masks = []
    for stack in masks:
        o = xp.zeros((len(stack), out_h, out_w), dtype=bool)
        if len(stack):
            o[:, :valid_h, :valid_w] = stack[:, iv, iu]
        out_masks.append(o)
    return out_img, out_masks


def _keypoints(kps: np.ndarray, p: LSJParams, flip_index, file_name: str) -> np.ndarray:
    """Keypoints (N, K, 3) through the LSJ map (on the host: they are tiny); points leaving the canvas -> 0.

    Map, drop, then permute on a flip (a paste permutes first: ``ocp_dali.keypoints``); the map is ``forward``'s
    own arithmetic, not the 6-coefficient affine of a paste, whose rounding differs."""
    xy = p.forward(kps[..., :2].astype(np.float64))
    out = keep_on_canvas(xy[..., 0], xy[..., 1], kps[..., 2], p.valid_w, p.valid_h, dtype=kps.dtype)
    if p.flip and out.shape[1]:
        if flip_index is None:
            raise ValueError(f"{file_name}: a flipped sample has keypoints but no keypoint flip_index")
        out = out[:, list(flip_index)]
    return out


def resample_arrays(sample: Sample, p: LSJParams, targets: Targets | None = None) -> Resampled:
    """``Resampled`` by ``sample_affine_arrays`` (NumPy or CuPy): every mask at full size, then the kept ones;
    amodal / occluder masks only when ``targets`` (default: the sample's) asks for them."""
    xp = array_module(sample.image)
    want = (sample.targets if targets is None else targets).names
    optional = [k for k in ("amodal_masks", "occluder_masks") if k in want]
    img, (vis, crowd, *rest) = sample_affine_arrays(
        sample.image, [sample.masks, sample.crowd_masks] + [getattr(sample, k) for k in optional],
        p.inv_q16, p.out_h, p.out_w, p.valid_w, p.valid_h)
    n, c = vis.shape[0], crowd.shape[0]
    keep = vis.reshape(n, -1).any(axis=1) if n else xp.zeros(0, dtype=bool)
    crowd_keep = crowd.reshape(c, -1).any(axis=1) if c else xp.zeros(0, dtype=bool)
    vis_k = vis[keep]
    got = {k: m[keep] for k, m in zip(optional, rest)}
    return Resampled(img, keep, vis_k, tight_boxes(vis_k), got.get("amodal_masks"), got.get("occluder_masks"),
                     crowd[crowd_keep])


def resample_compiled(fast: ModuleType, sample: Sample, p: LSJParams, targets: Targets | None = None) -> Resampled:
    """``Resampled`` by the compiled CPU loops ``fast`` (``compiled_loops``; NumPy arrays): which instances keep a
    pixel is found first, so only their masks are resampled, each only inside its box's window, and only the mask
    kinds ``targets`` (default: the sample's) asks for. The outputs alias where the inputs do (amodal masks that
    are the visible masks)."""
    want = (sample.targets if targets is None else targets).names
    geo = (p.inv_q16, p.out_h, p.out_w, p.valid_w, p.valid_h)
    img = fast.lsj_image(sample.image, *geo)
    keep = fast.lsj_hits(sample.masks, p.inv_q16, p.valid_w, p.valid_h)
    rows = np.flatnonzero(keep)
    vis, boxes = fast.lsj_masks(sample.masks, rows, *geo)
    amodal = occl = None
    if "amodal_masks" in want:
        amodal = vis if sample.amodal_masks is sample.masks else fast.lsj_masks(sample.amodal_masks, rows, *geo)[0]
    if "occluder_masks" in want:
        occl = fast.lsj_masks(sample.occluder_masks, rows, *geo)[0]
    crowd_rows = np.flatnonzero(fast.lsj_hits(sample.crowd_masks, p.inv_q16, p.valid_w, p.valid_h))
    crowd = fast.lsj_masks(sample.crowd_masks, crowd_rows, *geo)[0]
    return Resampled(img, keep, vis, boxes, amodal, occl, crowd)


def apply_lsj(sample: Sample, p: LSJParams, flip_index: tuple[int, ...] | None = None,
              targets: Targets | None = None) -> Sample:
    """Resample a sample and its requested targets (``flip_index``: keypoint left/right permutation for the flip;
    ``targets``: at most the sample's, default the sample's; the others are neither resampled nor allocated, see
    ``ocp_dali.targets``); instances whose visible mask leaves the canvas are removed (counted in
    ``info['dropped_by_crop']``). Boxes are recomputed from the resampled visible masks; occlusion rates are the
    instance's own (from the paste, not the crop); keypoints that leave the canvas become (0, 0, 0). NumPy or CuPy
    samples; NumPy ones by the compiled CPU loops when they are available (``resample_compiled``, the same bits as
    ``resample_arrays``), CuPy ones by the batch kernels (``apply_lsj_batch`` of one sample)."""
    targets = _wanted(sample, targets)
    if array_module(sample.image) is not np:
        return apply_lsj_batch([sample], [p], [flip_index], targets)[0]
    fast = compiled_loops(sample.image, p.inv_q16)
    r = resample_arrays(sample, p, targets) if fast is None else resample_compiled(fast, sample, p, targets)
    return finish_lsj(sample, p, r, r.keep, flip_index, targets)


def apply_lsj_batch(samples: Sequence[Sample], params: Sequence[LSJParams],
                    flip_indices: Sequence[tuple[int, ...] | None] | None = None, targets: Targets | None = None,
                    *, backend: Any = None) -> list[Sample]:
    """``[apply_lsj(s, p, fl, targets) ...]`` of a batch.

    ``backend``: an array backend of the kernels (``kernels.loader.CupyBackend``, ``kernels.emulate.EmulatedBackend``):
    the whole batch's geometry by the kernels of ``kernels/lsj.cu`` (three launches, one synchronisation:
    ``kernels.lsj``); None: those kernels on CuPy for CuPy samples, and ``apply_lsj`` per sample (the compiled CPU
    loops) for NumPy ones. The same outputs either way. Normalisation (mean / std, layout) is not part of the
    geometry: DALI's ``crop_mirror_normalize`` does it after the stage (or the model's data preprocessor)."""
    flips = list(flip_indices) if flip_indices is not None else [None] * len(samples)
    if not len(samples) == len(params) == len(flips):
        raise ValueError(f"batch lengths differ: {len(samples)} samples, {len(params)} params, {len(flips)} flips")
    if backend is None and all(array_module(s.image) is np for s in samples):
        return [apply_lsj(s, p, fl, targets) for s, p, fl in zip(samples, params, flips)]
    if backend is None:
        from ocp_dali.kernels.loader import CupyBackend

        backend = CupyBackend()
    from ocp_dali.kernels.lsj import resample_batch

    wanted = [_wanted(s, targets) for s in samples]
    out = resample_batch(backend, samples, params, wanted)
    return [finish_lsj(s, p, r, r.keep_host, fl, t)
            for s, p, r, fl, t in zip(samples, params, out, flips, wanted)]


def _wanted(sample: Sample, targets: Targets | None) -> Targets:
    """``targets`` (default the sample's), checked to be at most what the sample carries."""
    targets = sample.targets if targets is None else targets
    if not targets.names <= sample.targets.names:
        sample.restrict(targets)  # raises: names what is missing
    return targets


def finish_lsj(sample: Sample, p: LSJParams, r: Resampled, keep_host: Any, flip_index: tuple[int, ...] | None,
               targets: Targets) -> Sample:
    """The ``Sample`` of ``apply_lsj`` from its resampled arrays ``r`` (``keep_host``: ``r.keep``, or its host
    copy): the kept instances' rows, keypoints through the map (on the host), ``info['dropped_by_crop']``."""
    want = targets.names
    xp = array_module(sample.image)
    keep = r.keep
    keep_np = to_numpy(keep_host)
    kp = None
    if sample.keypoints is not None and "keypoints" in want:
        kp = _keypoints(to_numpy(sample.keypoints), p, flip_index, sample.file_name)[keep_np]
        kp = xp.asarray(kp)
    info = dict(sample.info)
    info["dropped_by_crop"] = int((~keep_np).sum())
    made = dict(amodal_masks=lambda: r.amodal_masks, occluder_masks=lambda: r.occluder_masks,
                occlusion_rate=lambda: sample.occlusion_rate[keep], order=lambda: sample.order[keep][:, keep],
                keypoints=lambda: kp)
    return Sample(
        image=r.image, masks=r.masks, boxes=r.boxes.astype(xp.float32), labels=sample.labels[keep],
        pasted=sample.pasted[keep], ann_ids=sample.ann_ids[keep], crowd_masks=r.crowd_masks,
        image_id=sample.image_id, file_name=sample.file_name, info=info, targets=targets,
        **{k: make() if k in want else absent(k, xp, p.out_h, p.out_w) for k, make in made.items()})
