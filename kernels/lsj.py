"""GPU backend of the sample geometry (``ocp_dali.lsj``): a whole batch's LSJ / resize / flip / pad in three
launches (``kernels/lsj.cu``), with one host synchronisation.

``resample_batch(be, samples, params, targets)`` equals ``[lsj.resample_arrays(s, p, t) ...]`` (the NumPy oracle)
exactly: image bytes, every requested mask kind, keep flags, tight boxes of the kept visible masks, kept crowd
regions. Launches per batch, whatever its size:
    1. ``ocp_lsj_scan``: every input mask plane (instances' visible, amodal and occluder planes when requested,
       crowd regions) -> the tight box of its resampled plane; an empty visible box is an instance that leaves the
       canvas. -> the one synchronisation: the boxes (16 bytes per plane and kind) come back to size the outputs.
    2. ``ocp_lsj_image``: every output canvas (integer bilinear content, zero padding).
    3. ``ocp_lsj_masks``: every kept plane of every requested kind, nearest, only inside its output box (zeros
       elsewhere), into one buffer per kind (visible, amodal, occluder, crowd) at per-sample offsets.
The outputs are views into those buffers. Amodal masks that are the visible masks (``sample.amodal_masks is
sample.masks``) are not resampled twice: their output is the visible view. Normalisation is not done here: it is
DALI's ``crop_mirror_normalize`` after the stage (or the model's data preprocessor), as on the CPU graph.

Inputs are read in place through device pointers in the descriptor tables (``LSJ_SAMPLE_FIELDS``,
``LSJ_PLANE_FIELDS``, ``LSJ_ROW_FIELDS``, mirrored by the structs of ``lsj.cu``); NumPy inputs are uploaded once.
``be`` is an array backend: ``kernels.loader.CupyBackend`` (CuPy) or ``kernels.emulate.EmulatedBackend`` (the
same kernels on the CPU). Parameters are duck-typed (``inv_q16``, ``out_h``, ``out_w``, ``valid_w``,
``valid_h``: ``lsj.LSJParams``), so this module imports nothing above ``sample``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ocp_dali.kernels.launch import BLOCK, grid_x, struct_table
from ocp_dali.sample import Resampled, Sample
from ocp_dali.targets import Targets

INT_BIG = 0x7FFFFFFF
KINDS = ("masks", "amodal_masks", "occluder_masks")  # the plane kinds, in the kernels' order (0, 1, 2)

# Field order of the structs in lsj.cu (checked by tests/test_gpu_lsj.py).
LSJ_SAMPLE_FIELDS = ("height", "width", "img_in", "img_row", "out_h", "out_w", "valid_w", "valid_h", "inv_a",
                     "inv_c", "inv_e", "inv_f", "img_out_off")
LSJ_PLANE_FIELDS = ("sample", "vis_in", "amodal_in", "occ_in")
LSJ_ROW_FIELDS = ("plane", "crowd", "vis_off", "amodal_off", "occ_off")

# Every kernel launched from here, and its source file.
KERNELS = {"ocp_lsj_scan": "lsj.cu", "ocp_lsj_image": "lsj.cu", "ocp_lsj_masks": "lsj.cu"}


def check_axis_aligned(p: Any) -> None:
    """The kernels evaluate u = a X + c, v = e Y + f: an LSJ map (b = d = 0); anything else is a caller's bug."""
    if int(p.inv_q16[1]) != 0 or int(p.inv_q16[3]) != 0:
        raise ValueError(f"the LSJ kernels need an axis-aligned map (b = d = 0), got inv_q16={p.inv_q16}")


class LsjBatch:
    """One batch: ``pack`` (descriptor tables), ``scan`` + ``image`` (launches 1-2), ``layout`` (after the one
    synchronisation), ``masks`` (launch 3), ``unpack`` into ``Resampled`` views. ``run`` does them in order."""

    def __init__(self, be: Any, samples: Sequence[Sample], params: Sequence[Any], targets: Sequence[Targets]):
        if not len(samples) == len(params) == len(targets):
            raise ValueError(f"batch lengths differ: {len(samples)} samples, {len(params)} params, "
                             f"{len(targets)} targets")
        self.be, self.samples, self.params, self.targets = be, list(samples), list(params), list(targets)
        self._keep_alive: list = []

    def dev(self, a: Any, dtype: Any) -> Any:
        arr = self.be.asarray(a, dtype)
        self._keep_alive.append((a, arr))
        return arr

    def launch(self, name: str, grid: tuple[int, int], *args: Any) -> None:
        self.be.launch(KERNELS[name], name, grid, BLOCK, args)

    # ---- packing ----
    def pack(self) -> None:
        """Descriptor tables: one sample struct per sample, one plane struct per instance and crowd region."""
        samples, planes = [], []
        self.plane_begin, self.img_off, img = [], [], 0
        self.alias = []  # per sample: its amodal output is its visible output
        for si, (s, p, t) in enumerate(zip(self.samples, self.params, self.targets)):
            check_axis_aligned(p)
            h, w = s.image.shape[:2]
            a, _, c, _, e, f = (int(v) for v in p.inv_q16)
            image = self.dev(s.image, np.uint8)
            samples.append(dict(height=h, width=w, img_in=self.be.ptr(image), img_row=w * 3, out_h=p.out_h,
                                out_w=p.out_w, valid_w=p.valid_w, valid_h=p.valid_h, inv_a=a, inv_c=c, inv_e=e,
                                inv_f=f, img_out_off=img))
            self.img_off.append(img)
            img += p.out_h * p.out_w * 3
            self.plane_begin.append(len(planes))
            planes += self.pack_planes(si, s, t, h * w)
        self.num_planes = len(planes)
        self.img_total = img
        self.samples_np = struct_table(samples, LSJ_SAMPLE_FIELDS)
        self.planes_np = struct_table(planes, LSJ_PLANE_FIELDS)
        self.samples_dev = self.be.asarray(self.samples_np)
        self.planes_dev = self.be.asarray(self.planes_np)

    def pack_planes(self, si: int, s: Sample, t: Targets, hw: int) -> list[dict]:
        """The plane structs of sample ``si``: its instances (kinds as requested), then its crowd regions."""
        n = int(s.masks.shape[0])
        alias = s.amodal_masks is s.masks
        self.alias.append(alias and "amodal_masks" in t.names)
        stacks = {"vis_in": s.masks}
        if "amodal_masks" in t.names and not alias:
            stacks["amodal_in"] = s.amodal_masks
        if "occluder_masks" in t.names:
            stacks["occ_in"] = s.occluder_masks
        base = {k: self.be.ptr(self.dev(v, np.bool_)) for k, v in stacks.items() if n}
        out = [dict(sample=si, **{k: b + i * hw for k, b in base.items()}) for i in range(n)]
        crowd = s.crowd_masks
        if int(crowd.shape[0]):
            cb = self.be.ptr(self.dev(crowd, np.bool_))
            out += [dict(sample=si, vis_in=cb + i * hw) for i in range(int(crowd.shape[0]))]
        return out

    # ---- launches ----
    def scan(self) -> None:
        """Launch 1: the output box of every plane and kind."""
        xp = self.be.xp
        self.boxes = xp.asarray(np.tile(np.array([INT_BIG, INT_BIG, -1, -1], np.int32),
                                        max(self.num_planes, 1) * len(KINDS)))
        if self.num_planes:
            max_hw = max(int(r[0] * r[1]) for r in self.samples_np)
            self.launch("ocp_lsj_scan", (grid_x(max_hw), self.num_planes), self.samples_dev, self.planes_dev,
                        np.int64(self.num_planes), self.boxes)

    def image(self) -> None:
        """Launch 2: every output canvas."""
        self.img_out = self.be.xp.empty(max(self.img_total, 1), dtype=self.be.xp.uint8)
        max_out = max(p.out_h * p.out_w for p in self.params)
        self.launch("ocp_lsj_image", (grid_x(max_out), len(self.samples)), self.samples_dev,
                    np.int64(len(self.samples)), self.img_out)

    # ---- outputs ----
    def layout(self) -> None:
        """After the synchronisation (the boxes on the host): the keep flags, where each kept plane of each kind
        goes (``rows``, uploaded), the output boxes of the kept instances, and each sample's offsets (``meta``)."""
        hb = np.asarray(self.be.to_host(self.boxes)).reshape(-1, len(KINDS), 4)[:self.num_planes]
        hit = hb[:, 0, 2] >= 0
        rows, out_boxes, self.meta = [], [], []
        tot = dict(vis=0, amodal=0, occ=0, crowd=0, rows=0)
        for si, (s, p, t) in enumerate(zip(self.samples, self.params, self.targets)):
            n, hw, j0 = int(s.masks.shape[0]), p.out_h * p.out_w, self.plane_begin[si]
            keep = hit[j0:j0 + n]
            kept = [int(v) for v in np.flatnonzero(keep)]
            crowd_kept = [int(v) for v in np.flatnonzero(hit[j0 + n:j0 + n + int(s.crowd_masks.shape[0])])]
            am = "amodal_masks" in t.names and not self.alias[si]
            occ = "occluder_masks" in t.names
            m = dict(keep=keep, n=len(kept), c=len(crowd_kept), hw=hw, box_row=tot["rows"], vis=tot["vis"],
                     amodal=tot["amodal"], occ=tot["occ"], crowd=tot["crowd"])
            for r, i in enumerate(kept):
                rows.append(dict(plane=j0 + i, vis_off=m["vis"] + r * hw,
                                 amodal_off=m["amodal"] + r * hw if am else -1,
                                 occ_off=m["occ"] + r * hw if occ else -1))
                b = hb[j0 + i, 0]
                out_boxes.append((b[0], b[1], b[2] + 1, b[3] + 1))
            rows += [dict(plane=j0 + n + i, crowd=1, vis_off=m["crowd"] + r * hw, amodal_off=-1, occ_off=-1)
                     for r, i in enumerate(crowd_kept)]
            tot["vis"] += len(kept) * hw
            tot["amodal"] += len(kept) * hw if am else 0
            tot["occ"] += len(kept) * hw if occ else 0
            tot["crowd"] += len(crowd_kept) * hw
            tot["rows"] += len(kept)
            self.meta.append(m)
        self.num_rows, self.totals = len(rows), tot
        self.rows_dev = self.be.asarray(struct_table(rows, LSJ_ROW_FIELDS))
        self.out_boxes = self.be.asarray(np.array(out_boxes, dtype=np.int64).reshape(-1, 4))
        self.keep_dev = self.be.asarray(hit.astype(bool))

    def masks(self) -> None:
        """Launch 3: every kept plane of every requested kind, into one buffer per kind (None: no such plane)."""
        xp, tot = self.be.xp, self.totals
        buf = lambda n: xp.empty(n, dtype=xp.bool_) if n else None  # noqa: E731
        self.out = {k: buf(tot[k]) for k in ("vis", "amodal", "occ", "crowd")}
        if not self.num_rows:
            return
        one = xp.empty(1, dtype=xp.bool_)  # for a kind no row writes
        args = [self.out[k] if self.out[k] is not None else one for k in ("vis", "amodal", "occ", "crowd")]
        max_out = max(p.out_h * p.out_w for p in self.params)
        self.launch("ocp_lsj_masks", (grid_x(max_out), self.num_rows), self.samples_dev, self.planes_dev,
                    self.rows_dev, np.int64(self.num_rows), self.boxes, *args)

    def unpack(self) -> list[Resampled]:
        """One ``Resampled`` per sample: views into the batch buffers."""
        xp, res = self.be.xp, []
        for si, (m, p, t) in enumerate(zip(self.meta, self.params, self.targets)):
            H, W, n, hw = p.out_h, p.out_w, m["n"], m["hw"]

            def planes(kind: str, cnt: int) -> Any:
                buf = self.out[kind]
                return xp.zeros((0, H, W), dtype=bool) if buf is None or not cnt else (
                    buf[m[kind]:m[kind] + cnt * hw].reshape(cnt, H, W))

            vis = planes("vis", n)
            amodal = (vis if self.alias[si] else planes("amodal", n)) if "amodal_masks" in t.names else None
            occ = planes("occ", n) if "occluder_masks" in t.names else None
            j0, n_in = self.plane_begin[si], len(m["keep"])
            res.append(Resampled(
                image=self.img_out[self.img_off[si]:self.img_off[si] + hw * 3].reshape(H, W, 3),
                keep=self.keep_dev[j0:j0 + n_in], masks=vis, boxes=self.out_boxes[m["box_row"]:m["box_row"] + n],
                amodal_masks=amodal, occluder_masks=occ, crowd_masks=planes("crowd", m["c"]),
                keep_host=m["keep"]))
        return res

    def run(self) -> list[Resampled]:
        self.pack()
        self.scan()
        self.image()
        self.layout()  # the one synchronisation: the boxes come back
        self.masks()
        return self.unpack()


def resample_batch(be: Any, samples: Sequence[Sample], params: Sequence[Any],
                   targets: Sequence[Targets] | None = None) -> list[Resampled]:
    """``[lsj.resample_arrays(s, p, t) ...]`` of a batch on the array backend ``be`` (see the module docstring);
    ``targets``: one per sample (default each sample's own); an empty batch gives an empty list."""
    if not samples:
        return []
    targets = [s.targets for s in samples] if targets is None else list(targets)
    return LsjBatch(be, samples, params, targets).run()
