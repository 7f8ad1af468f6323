"""The ``Sample`` contract shared by the data loaders, both apply backends and the adapters."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ocp_dali.masks import tight_boxes
from ocp_dali.targets import OPTIONAL, Targets, absent
from ocp_dali.xp import array_module

# The counts every ``Sample.info`` carries (0 when nothing happened): ``apply`` sets the first five, the crop of
# LSJ ``dropped_by_crop`` and the loaders ``dropped_sources`` (pastes left out because their image was unusable).
COUNTS = ("pasted", "skipped", "dropped_existing", "dropped_pasted", "dropped_crowd", "dropped_by_crop",
          "dropped_sources")


@dataclass(frozen=True, eq=False)
class Sample:
    """One image with its instances and occlusion targets (NumPy arrays; CuPy arrays on the GPU backend).

    Shapes and dtypes (``N`` instances, ``K`` keypoints, ``C`` crowd regions):
        image: (H, W, 3) uint8, RGB.
        masks: (N, H, W) bool, the *visible* masks.
        amodal_masks: (N, H, W) bool, whole masks (a pasted instance's transformed mask clipped to the canvas;
            an existing instance's mask before this sample's pastes).
        boxes: (N, 4) float32 xyxy, tight boxes of ``masks`` with exclusive end ``[x0, y0, x1+1, y1+1]``.
        labels: (N,) int64 category ids.
        occlusion_rate: (N,) float32, ``1 - visible_area / amodal_area``.
        occluder_masks: (N, H, W) bool, union of what was pasted over the instance, inside its amodal box.
        order: (N, N) bool, ``order[i, j]`` iff ``i`` was pasted after ``j`` and their amodal masks overlap.
        keypoints: (N, K, 3) float32 ``(x, y, v)`` in COCO convention, or None.
        pasted: (N,) bool, instance was pasted by this augmentation.
        ann_ids: (N,) int64, the COCO annotation id each instance comes from (-1 if none).
        crowd_masks: (C, H, W) bool, crowd / ignore regions of the destination (never pasted; pastes cover them).
        image_id: id of the destination image; file_name: its file (for error messages).
        info: counts from the augmentation, every name of ``COUNTS`` (missing ones are filled in with 0, so a
            sample nothing was done to has them all) plus any extra key given.
        targets: which optional targets (``ocp_dali.targets``) the sample carries; default all. The rule for the
            others: ``amodal_masks`` / ``occluder_masks`` are (0, H, W) bool, ``occlusion_rate`` (0,) float32,
            ``order`` (0, 0) bool, ``keypoints`` None (``targets.absent``): never computed, never allocated at full
            size. Consumers test ``name in sample.targets``. A sample without amodal masks, occluders, occlusion
            rates or order reads as a loaded one (amodal = visible, nothing occluded), which only an unaugmented
            sample is (``amodal_or_visible`` checks).
    """

    image: np.ndarray
    masks: np.ndarray
    amodal_masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    occlusion_rate: np.ndarray
    occluder_masks: np.ndarray
    order: np.ndarray
    keypoints: np.ndarray | None
    pasted: np.ndarray
    ann_ids: np.ndarray
    crowd_masks: np.ndarray
    image_id: int = -1
    file_name: str = ""
    info: dict[str, int] = field(default_factory=dict)
    targets: Targets = field(default_factory=Targets.all)

    def __post_init__(self) -> None:
        # frozen: the one write, a new dict (never the caller's)
        object.__setattr__(self, "info", {**dict.fromkeys(COUNTS, 0), **self.info})

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def from_instances(
        cls,
        image: np.ndarray,
        masks: np.ndarray,
        labels: np.ndarray,
        *,
        keypoints: np.ndarray | None = None,
        ann_ids: np.ndarray | None = None,
        crowd_masks: np.ndarray | None = None,
        image_id: int = -1,
        file_name: str = "",
        targets: Targets | None = None,
    ) -> "Sample":
        """A sample as loaded: amodal = visible masks, no occlusion, nothing pasted.

        ``image`` (H, W, 3) uint8; ``masks`` (N, H, W) bool (non-empty); ``labels`` (N,) ints. The arrays stay in
        the image's array module (NumPy, or CuPy on the GPU backend); small host arrays (labels, ids, keypoints)
        are moved to it. ``targets``: the optional targets it carries (default all; see the class docstring).
        """
        xp = array_module(image)
        image = xp.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != xp.uint8:
            raise ValueError(f"{file_name or 'image'}: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        masks = xp.asarray(masks, dtype=bool).reshape(-1, h, w)
        n = len(masks)
        labels = xp.asarray(labels, dtype=xp.int64).reshape(n)
        if keypoints is not None:
            keypoints = xp.asarray(keypoints, dtype=xp.float32)
            if keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 3:
                raise ValueError(f"{file_name or 'sample'}: keypoints must be ({n}, K, 3), got {keypoints.shape}")
        if crowd_masks is None:
            crowd_masks = xp.zeros((0, h, w), dtype=bool)
        t = Targets.all() if targets is None else targets
        loaded = dict(amodal_masks=lambda: masks, occluder_masks=lambda: xp.zeros((n, h, w), dtype=bool),
                      occlusion_rate=lambda: xp.zeros(n, dtype=xp.float32),
                      order=lambda: xp.zeros((n, n), dtype=bool), keypoints=lambda: keypoints)
        # unrequested targets are never built (a zero occluder stack is N full planes)
        optional = {k: make() if k in t.names else absent(k, xp, h, w) for k, make in loaded.items()}
        return cls(
            image=image,
            masks=masks,
            boxes=tight_boxes(masks).astype(xp.float32),
            labels=labels,
            pasted=xp.zeros(n, dtype=bool),
            ann_ids=xp.full(n, -1, dtype=xp.int64) if ann_ids is None else xp.asarray(ann_ids, xp.int64).reshape(n),
            crowd_masks=xp.asarray(crowd_masks, dtype=bool).reshape(-1, h, w),
            image_id=int(image_id),
            file_name=str(file_name),
            targets=t,
            **optional,
        )

    def restrict(self, targets: Targets | None) -> "Sample":
        """This sample carrying only ``targets`` (None: itself): the others replaced by ``targets.absent``.
        Raises ``ValueError`` when ``targets`` asks for one the sample does not carry."""
        if targets is None or targets == self.targets:
            return self
        extra = sorted(targets.names - self.targets.names)
        if extra:
            raise ValueError(f"{self.file_name or 'sample'}: carries no {extra} (it has {self.targets})")
        xp = array_module(self.image)
        dropped = {n: absent(n, xp, self.height, self.width) for n in OPTIONAL if n not in targets.names}
        return replace(self, targets=targets, **dropped)

    def amodal_or_visible(self) -> Any:
        """The (N, H, W) bool amodal masks, or the visible ones for a sample that carries none: only valid for a
        sample nothing was pasted on (amodal = visible), so any other raises ``ValueError``."""
        if "amodal_masks" in self.targets.names:
            return self.amodal_masks
        if self.info["pasted"] or bool(self.pasted.any()):
            raise ValueError(f"{self.file_name or 'sample'}: has pastes but carries no amodal masks (targets "
                             f"{self.targets}); request amodal_masks")
        return self.masks

    def arrays(self) -> dict[str, Any]:
        """The array fields by name (for comparisons and conversions)."""
        names = (
            "image masks amodal_masks boxes labels occlusion_rate occluder_masks order keypoints pasted ann_ids "
            "crowd_masks"
        ).split()
        return {k: getattr(self, k) for k in names}

    def map_arrays(self, fn: Callable[[Any], Any]) -> "Sample":
        """A copy with ``fn`` applied to every array field (None stays None), e.g. ``cupy.asarray`` to upload a
        sample to the GPU, ``cupy.asnumpy`` to bring it back."""
        return replace(self, **{k: None if v is None else fn(v) for k, v in self.arrays().items()})


class Resampled(NamedTuple):
    """A sample's arrays on its LSJ canvas (``out_h x out_w``), only the instances that keep a visible pixel.

    Attributes:
        image: (out_h, out_w, 3) uint8.
        keep: (N,) bool over the input instances: the visible mask keeps a pixel on the canvas.
        masks, amodal_masks, occluder_masks: (n, out_h, out_w) bool of the kept instances (n = keep.sum());
            amodal and occluder masks None when not requested (never resampled).
        boxes: (n, 4) int64 tight xyxy boxes of ``masks``.
        crowd_masks: (c, out_h, out_w) bool, the crowd regions that keep a pixel.
        keep_host: ``keep`` on the host when the arrays live on a device and it came back anyway (the GPU batch
            kernels' synchronisation), else None.

    Made by ``lsj.resample_arrays`` / ``lsj.resample_compiled`` and the GPU batch kernels (``kernels/lsj.py``).
    """

    image: Any
    keep: Any
    masks: Any
    boxes: Any
    amodal_masks: Any
    occluder_masks: Any
    crowd_masks: Any
    keep_host: Any = None
