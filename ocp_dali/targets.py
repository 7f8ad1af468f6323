"""Which outputs a training loop asks for: ``Targets``, the one description the loaders, the stage, both backends
and the geometry (``lsj.apply_lsj``) take.

Always produced: the image, visible ``masks``, ``boxes``, ``labels`` (and the bookkeeping ``pasted``, ``ann_ids``,
``info``). On request (``OPTIONAL``): ``amodal_masks``, ``occluder_masks``, ``occlusion_rate``, ``order``,
``keypoints``. An unrequested target is neither computed nor allocated at full size: the ``Sample`` field (and the
stage's output) holds an empty array of the target's dtype and rank with 0 along every instance axis
(``absent``): masks (0, H, W) bool, ``occlusion_rate`` (0,) float32, ``order`` (0, 0) bool; keypoints are ``None``
in a ``Sample`` (as for a dataset without keypoints) and (0, 0, 3) float32 as a stage output. The names are those of
``wire.OUTPUT_NAMES``. Default everywhere: ``Targets.all()``, which is the behaviour before targets existed.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

OPTIONAL = ("amodal_masks", "occluder_masks", "occlusion_rate", "order", "keypoints")
ALWAYS = ("image", "masks", "boxes", "labels", "pasted", "ann_ids", "info")


@dataclass(frozen=True)
class Targets:
    """A set of the optional output names (``OPTIONAL``) that are wanted.

    ``Targets(names)`` validates: names of ``ALWAYS`` are accepted and ignored (they are always there), any other
    name raises ``ValueError``. ``Targets.of(spec)`` takes what the loaders accept (None: all; a ``Targets``; one
    name or an iterable of names; ``"all"`` / ``"visible"``).
    """

    names: frozenset[str] = frozenset(OPTIONAL)

    def __post_init__(self) -> None:
        names = frozenset([self.names] if isinstance(self.names, str) else self.names)
        unknown = sorted(names - set(OPTIONAL) - set(ALWAYS))
        if unknown:
            raise ValueError(f"Targets: unknown output names {unknown}; optional ones are {list(OPTIONAL)} "
                             f"(always produced: {list(ALWAYS)})")
        object.__setattr__(self, "names", names & frozenset(OPTIONAL))

    @classmethod
    def all(cls) -> "Targets":
        """Every optional target (the default)."""
        return cls(frozenset(OPTIONAL))

    @classmethod
    def visible(cls) -> "Targets":
        """None of the optional ones: image, visible masks, boxes, labels."""
        return cls(frozenset())

    @classmethod
    def of(cls, spec: "Targets | str | Iterable[str] | None") -> "Targets":
        if spec is None or spec == "all":
            return cls.all()
        if isinstance(spec, Targets):
            return spec
        if spec == "visible":
            return cls.visible()
        return cls(frozenset([spec] if isinstance(spec, str) else spec))

    def __contains__(self, name: object) -> bool:
        return name in ALWAYS or name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(n for n in OPTIONAL if n in self.names)

    def __repr__(self) -> str:
        return f"Targets({sorted(self.names)})"

    @property
    def is_all(self) -> bool:
        return self.names == frozenset(OPTIONAL)

    @property
    def amodal_stack(self) -> bool:
        """Whether the apply step needs the amodal masks as a full-size stack (an output, or the order matrix's
        overlap test); the occlusion rate needs only their areas, and occluder masks only their boxes."""
        return "amodal_masks" in self.names or "order" in self.names

    @property
    def amodal_boxes(self) -> bool:
        """Whether the apply step needs the boxes of the amodal masks (occlusion rate, occluders, order)."""
        return bool(self.names & {"occlusion_rate", "occluder_masks", "order"})


def absent(name: str, xp: Any, height: int, width: int) -> Any:
    """The value of an unrequested target in a ``Sample``: an empty array of its dtype and rank (0 instances), or
    None for keypoints."""
    if name in ("amodal_masks", "occluder_masks"):
        return xp.zeros((0, height, width), dtype=bool)
    if name == "occlusion_rate":
        return xp.zeros(0, dtype=xp.float32)
    if name == "order":
        return xp.zeros((0, 0), dtype=bool)
    if name == "keypoints":
        return None
    raise ValueError(f"absent: {name!r} is not an optional target ({list(OPTIONAL)})")

