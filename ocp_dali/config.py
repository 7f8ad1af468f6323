"""OC&P configuration: the seed's parameter names and defaults, validated, with presets for the paper's rows."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
from dataclasses import dataclass
from typing import Literal, get_args, get_origin, get_type_hints

Mode = Literal["ocp", "simple"]
Source = Literal["dataset", "batch"]
PRESETS = ("ocp", "basic", "simple")  # the paper's rows: OCPConfig.from_preset(name) and OCPConfig.<name>()


@dataclass(frozen=True)
class OCPConfig:
    """Parameters of Occlusion Copy & Paste (names and defaults of the seed's ``OccCopyPaste``).

    ``mode="ocp"`` is the seed's algorithm (``docs: ocp-spec §2``); ``mode="simple"`` reproduces mmdet 3's
    ``CopyPaste`` (Simple Copy-Paste): one source image, instances pasted at their own coordinates, mmdet's
    number-pasted draw and keep rule.

    Attributes:
        prob: chance per sample that the augmentation runs at all.
        basket_size: number of *other* images drawn as paste sources.
        paste_num: ``(lo, hi)``, ``k = min(#candidates, randint(lo, hi))`` with ``hi`` exclusive.
        min_size_paste: a source instance is a candidate iff its tight box width and height are
            ``> min_size_paste * sqrt(H*W)`` of the destination.
        min_size_occ: an instance touched by a paste is dropped iff its remaining tight box width or height is
            ``<= min_size_occ * sqrt(H*W)``.
        targeted_paste_prob: per paste, chance of occlusion-aware placement.
        targeted_paste_buffer: the target box is widened by ``buffer*w`` / ``buffer*h`` on each side.
        aug_paste_geom_jitter: hflip p=0.5, scale U[0.8, 1.2), integer rotation in [-10, 9] degrees.
        aug_paste_img_jitter: with p=0.5 colour, brightness, contrast and sharpness jitter of the pasted crop.
        blend_sigma: Gaussian sigma (px) of the feathered alpha; 0 is a hard paste.
        source: ``"dataset"`` draws the basket from the dataset (seed), ``"batch"`` from the same batch.
        mode: ``"ocp"`` or ``"simple"``.
        max_num_pasted, bbox_occluded_thr, mask_occluded_thr, selected: mmdet ``CopyPaste`` parameters, used in
            simple mode only.
    """

    prob: float = 0.8
    basket_size: int = 1
    paste_num: tuple[int, int] = (1, 3)
    min_size_paste: float = 0.1
    min_size_occ: float = 0.01
    targeted_paste_prob: float = 0.8
    targeted_paste_buffer: float = 0.4
    aug_paste_geom_jitter: bool = False
    aug_paste_img_jitter: bool = False
    blend_sigma: float = 0.0
    source: Source = "dataset"
    mode: Mode = "ocp"
    max_num_pasted: int = 100
    bbox_occluded_thr: float = 10.0
    mask_occluded_thr: int = 300
    selected: bool = True

    def __post_init__(self) -> None:
        # Store every value as its field's type: configs write paste_num=[1, 3] (the seed's) or numpy scalars, and a
        # string or a NaN would otherwise fail far from the config that set it (or not at all).
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _typed(f.name, getattr(self, f.name), hints[f.name]))
        self.validate()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The parameter names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check_names(cls, names: object) -> None:
        """Raise ``ValueError`` for a name that is not a field (a typo such as ``basket_sise``), listing the valid
        names: Python's own error is a ``TypeError`` from the generated ``__init__``, deep under mmengine's
        registry when the config comes from an mmdet config file."""
        valid = cls.field_names()
        for name in names:  # type: ignore[attr-defined]
            if name not in valid:
                close = difflib.get_close_matches(str(name), valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"OCPConfig has no field {name!r}{hint}; valid fields: {', '.join(valid)}")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""

        def bad(name: str, why: str) -> None:
            raise ValueError(f"OCPConfig.{name}={getattr(self, name)!r}: {why}")

        if not 0.0 <= self.prob <= 1.0:
            bad("prob", "must be in [0, 1]")
        if self.basket_size < 1:
            bad("basket_size", "must be an int >= 1")
        pn = self.paste_num
        if pn[0] < 0 or pn[1] <= pn[0]:
            bad("paste_num", "needs 0 <= lo < hi (hi is exclusive: (1, 3) pastes 1 or 2)")
        if self.min_size_paste < 0:
            bad("min_size_paste", "must be >= 0")
        if self.min_size_occ < 0:
            bad("min_size_occ", "must be >= 0")
        if not 0.0 <= self.targeted_paste_prob <= 1.0:
            bad("targeted_paste_prob", "must be in [0, 1]")
        if self.targeted_paste_buffer < -0.5:
            bad("targeted_paste_buffer", "must be >= -0.5 (a smaller buffer leaves an empty target box)")
        if self.blend_sigma < 0 or self.blend_sigma > 32:
            bad("blend_sigma", "must be in [0, 32] pixels")
        if self.max_num_pasted < 1:
            bad("max_num_pasted", "must be >= 1")
        if self.bbox_occluded_thr < 0:
            bad("bbox_occluded_thr", "must be >= 0")
        if self.mask_occluded_thr < 0:
            bad("mask_occluded_thr", "must be >= 0")
        if self.mode == "simple" and self.basket_size != 1:
            bad("basket_size", "simple mode (mmdet CopyPaste) uses exactly one source image")

    def replace(self, **changes: object) -> "OCPConfig":
        """A copy with ``changes`` applied (names checked, values validated)."""
        self.check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_preset(cls, name: str | None, **overrides: object) -> "OCPConfig":
        """The preset ``name`` (one of ``PRESETS``; None: the seed's defaults) with ``overrides`` applied: what a
        config file or a command line gives (``OcclusionCopyPaste(preset=..., **fields)``, the DALI loader).

        Raises ``ValueError`` for an unknown preset or field (listing the valid ones), a value of the wrong type
        (naming the field and the type) or out of range (non-finite included).
        """
        cls.check_names(overrides)
        if name is None:
            return cls(**overrides)
        presets = {"ocp": cls.ocp, "basic": cls.basic, "simple": cls.simple}
        if name not in presets:
            raise ValueError(f"OCPConfig: unknown preset {name!r}; presets: {', '.join(PRESETS)} (or None)")
        return presets[name](**overrides)

    @classmethod
    def ocp(cls, **overrides: object) -> "OCPConfig":
        """OC&P as in the paper's best row: seed defaults with geometric and image jitter on."""
        return cls(aug_paste_geom_jitter=True, aug_paste_img_jitter=True).replace(**overrides)

    @classmethod
    def basic(cls, **overrides: object) -> "OCPConfig":
        """Basic C&P: 5-image basket, 1..9 pastes, no minimum size, no targeted placement, no jitter."""
        return cls(basket_size=5, paste_num=(1, 10), min_size_paste=0.0, targeted_paste_prob=0.0).replace(
            **overrides
        )

    @classmethod
    def simple(cls, **overrides: object) -> "OCPConfig":
        """mmdet 3 ``CopyPaste`` semantics (Simple Copy-Paste): runs on every sample, same coordinates."""
        return cls(
            mode="simple",
            prob=1.0,
            basket_size=1,
            min_size_paste=0.0,
            targeted_paste_prob=0.0,
        ).replace(**overrides)


@functools.cache
def _field_types(cls: type) -> dict[str, object]:
    """The resolved annotations of ``cls`` (strings under ``from __future__ import annotations``)."""
    return get_type_hints(cls)


def _typed(name: str, value: object, hint: object) -> object:
    """``value`` as a field of type ``hint`` (int fields take integers, float fields real numbers, both stored as
    Python scalars; bools are not numbers here), or ``ValueError`` naming the field and the expected type. Floats
    must be finite: NaN passes every range check by comparing false."""

    def wrong(expected: str) -> ValueError:
        return ValueError(f"OCPConfig.{name}={value!r}: must be {expected}, got {type(value).__name__}")

    def is_int(v: object) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if hint is bool:
        if not isinstance(value, bool):
            raise wrong("a bool")
        return value
    if hint is int:
        if not is_int(value):
            raise wrong("an int")
        return int(value)  # type: ignore[call-overload]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise wrong("a number (float)")
        if not math.isfinite(value):
            raise ValueError(f"OCPConfig.{name}={value!r}: must be a finite number")
        return float(value)
    if get_origin(hint) is Literal:  # source, mode
        if value not in get_args(hint):
            raise ValueError(f"OCPConfig.{name}={value!r}: must be {' or '.join(map(repr, get_args(hint)))}")
        return value
    if get_origin(hint) is tuple:  # paste_num
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value)):
            raise wrong("a pair of ints (lo, hi)")
        return tuple(int(v) for v in value)
    raise AssertionError(f"OCPConfig.{name}: no check for type {hint}")  # a new field needs its type handled here
