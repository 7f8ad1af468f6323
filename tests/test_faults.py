"""Issue #7, data layer: every fault of a generated corpus (``tests/faults.py``) gives an error naming the file, or a
counted, logged skip naming the annotation; every good image decodes to the pixels it was made from and augments with
every invariant of spec section 5."""
from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image, ImageFile
from pycocotools import mask as mask_utils

from faults import (GoodBaskets, write_fault_corpus, write_image_without_size, write_invalid_json,
                    write_no_candidate_corpus, write_not_coco_json)
from invariants import check_invariants, tight
from ocp_dali import CocoInstances, DataError, OCPConfig, apply, plan_for
from ocp_dali.data.imageio import (ImageHeader, bytes_for_decoder, decode_image, needs_reencoding, probe_image,
                                   reencode_png)
from ocp_dali.augment import reference_sample
from test_real_data import run_checked

BAD_CASES = ["corrupt_jpeg", "truncated_jpeg", "missing", "empty_file", "not_an_image", "png_no_iend",
             "truncated_png", "gif", "size_mismatch", "exif6_stored_size"]
OCP = OCPConfig.ocp(prob=1.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_fault_corpus(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def ds(corpus):
    return GoodBaskets(corpus)


def encoded(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


def pil_rgb(data: bytes | np.ndarray) -> np.ndarray:
    """What a plain decoder makes of encoded bytes (no EXIF handling, Pillow's own RGB conversion)."""
    with Image.open(io.BytesIO(data if isinstance(data, bytes) else data.tobytes())) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- imageio


def test_probe_reads_the_header_and_catches_truncation_decode_catches_the_rest():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    jpg = encoded(rgb, "JPEG", quality=90)
    assert probe_image(jpg, "a.jpg") == ImageHeader(60, 40, "JPEG", "RGB", 1, 8)
    assert probe_image(np.frombuffer(jpg, np.uint8), "a.jpg").width == 60
    assert probe_image(jpg + b"\x00" * 300, "a.jpg").format == "JPEG"  # padding after the end marker is fine
    assert decode_image(jpg + b"\x00" * 300, "a.jpg").shape == (40, 60, 3)
    for data, why in [(b"", "empty file"), (jpg[:-2], "no end-of-image marker"), (jpg[:len(jpg) // 2], "truncated"),
                      (b"GIF89a" + b"\x00" * 50, "cannot identify image"), (b"\xff\xd8" + b"\x17" * 500, "cannot")]:
        with pytest.raises(DataError, match=why) as e:
            probe_image(data, "dir/a.jpg")
        assert e.value.file == "dir/a.jpg" and "dir/a.jpg" in str(e.value)
        with pytest.raises(DataError, match=why):
            decode_image(data, "dir/a.jpg")
    # a PNG whose compressed data ends early but whose IEND chunk is there: only the full decode finds out
    png = encoded(rgb, "PNG")
    iend = png.index(b"IEND") - 4
    cut = png[:iend // 2] + png[iend:]
    assert probe_image(cut, "a.png").width == 60
    with pytest.raises(DataError, match="cannot decode image"):
        decode_image(cut, "a.png")


def test_decode_refuses_to_run_with_truncated_images_allowed(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encoded(np.zeros((4, 4, 3), np.uint8), "PNG"), "a.png")


def test_sixteen_bit_gray_keeps_the_high_byte_where_pillow_would_clip():
    g16 = np.array([[0, 255, 256, 4095], [32768, 40000, 65280, 65535]], np.uint16)
    png = encoded(g16, "PNG")
    h = probe_image(png, "g.png")
    assert (h.mode, h.bit_depth) == ("I;16", 16) and needs_reencoding(h)
    got = decode_image(png, "g.png")
    want = np.repeat((g16 >> 8).astype(np.uint8)[:, :, None], 3, 2)
    assert np.array_equal(got, want)
    assert pil_rgb(png)[1, 0, 0] == 255 != got[1, 0, 0]  # Pillow's convert clips 32768 to 255


def test_reencoding_policy_and_bytes_for_decoder():
    def header(**kw):
        return ImageHeader(**{**dict(width=4, height=3, format="JPEG", mode="RGB", orientation=1, bit_depth=8),
                              **kw})

    assert not needs_reencoding(header())
    assert not needs_reencoding(header(mode="L"))
    assert not needs_reencoding(header(format="PNG"))
    for kw in [dict(mode="CMYK"), dict(orientation=6), dict(orientation=3), dict(format="PNG", bit_depth=16),
               dict(format="PNG", mode="I;16", bit_depth=16), dict(format="PNG", mode="P"), dict(format="PNG",
               mode="RGBA"), dict(format="PNG", mode="LA"), dict(format="BMP"), dict(format="MPO")]:
        assert needs_reencoding(header(**kw)), kw
    rgb = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    plain = np.frombuffer(encoded(rgb, "PNG"), np.uint8)
    assert bytes_for_decoder(plain, "a.png") is plain  # handed over as it is, no copy
    assert np.array_equal(bytes_for_decoder(plain.tobytes(), "a.png"), plain)
    png = reencode_png(rgb)
    assert png.dtype == np.uint8 and png.ndim == 1
    assert probe_image(png, "r.png") == ImageHeader(20, 30, "PNG", "RGB", 1, 8)
    assert np.array_equal(pil_rgb(png), rgb)
    with pytest.raises(DataError, match="truncated"):
        bytes_for_decoder(plain[:-12], "a.png")


def test_bytes_for_decoder_gives_a_plain_decoder_the_pixels_of_decode_image(corpus, ds):
    """For every good corpus image: a decoder that knows nothing of EXIF, CMYK or 16 bits (Pillow's ``open`` +
    ``convert("RGB")`` stands in for DALI's) decodes ``bytes_for_decoder`` to exactly ``decode_image``."""
    reencoded = set()
    for i in corpus.good:
        if i == corpus.index["huge"]:
            continue
        path = str(ds.file_path(i))
        data = ds.read_bytes(i)
        out = bytes_for_decoder(data, path)
        want = decode_image(data, path)
        if out is not data:
            reencoded.add(i)
            assert probe_image(out, "x.png") == ImageHeader(want.shape[1], want.shape[0], "PNG", "RGB", 1, 8)
        assert np.array_equal(pil_rgb(out), want), path
    names = {n for n, i in corpus.index.items() if i in reencoded}
    assert names == {"png_rgba", "png_palette", "jpeg_cmyk", "png_16bit", "png_rgb48", "bmp", "exif3", "exif6",
                     "exif8", "png_exif6"}


def test_dali_cpu_decoder_decodes_bytes_for_decoder_to_decode_image(corpus, ds):
    """The contract with the DALI graph, on DALI's CPU decoder: exactly ``decode_image``'s pixels for every good
    corpus image (measured with DALI 2.4: its own decode of the 16-bit PNGs differs from ``>> 8`` by 1 level)."""
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, types

    idx = [i for i in corpus.good if i != corpus.index["huge"]]
    data = [bytes_for_decoder(ds.read_bytes(i), str(ds.file_path(i))) for i in idx]

    @dali.pipeline_def(batch_size=len(idx), num_threads=1, device_id=None, exec_pipelined=False, exec_async=False)
    def decode():
        return fn.decoders.image(fn.external_source(source=lambda: data, batch=True, dtype=types.UINT8),
                                 device="cpu", output_type=types.RGB)

    pipe = decode()
    pipe.build()
    (out,) = pipe.run()
    for k, i in enumerate(idx):
        assert np.array_equal(np.asarray(out.at(k)), ds.read_image(i)), ds.file_path(i).name


# ---------------------------------------------------------------- bad images


def test_corpus_has_every_bad_case(corpus):
    assert {n for n, i in corpus.index.items() if i in corpus.bad_images} == set(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_image_is_an_error_naming_the_file(corpus, ds, case):
    i = corpus.index[case]
    path = str(ds.file_path(i))
    for read in (ds.probe, ds.read_image, ds.load):
        with pytest.raises(DataError) as e:
            read(i)
        assert e.value.file == path and path in str(e.value), (read.__name__, str(e.value))
        assert corpus.bad_images[i] in str(e.value), (read.__name__, str(e.value))
    assert len(ds.meta(i).boxes) == 1  # its annotations are still readable: a loader can plan around it


# ---------------------------------------------------------------- bad annotations


def test_bad_annotations_are_counted_logged_skips(corpus, caplog):
    caplog.set_level(logging.WARNING, logger="ocp_dali.data.coco")
    ds = CocoInstances(corpus.ann_file, corpus.img_dir)
    kept = {int(a) for i in range(len(ds)) for a in ds.annotation(i)["ann_ids"]}
    skips = {s.ann_id: s for s in ds.skips}
    assert len(ds.skips) == len(skips) == len(corpus.skipped_anns), "every skip once, no unexpected skip"
    records = [r.getMessage() for r in caplog.records]
    per_image = {a for i in range(len(ds)) for a, _ in ds.annotation(i)["skipped"]}
    image_of = {a["id"]: a["image_id"] for a in json.loads(corpus.ann_file.read_text())["annotations"]}
    for aid, why in corpus.skipped_anns.items():
        s = skips[aid]
        assert why in s.reason, (aid, s.reason)
        assert aid not in kept
        if aid in corpus.orphan_anns:
            assert s.file == str(corpus.ann_file) and aid not in per_image
        else:
            assert s.file == str(ds.file_path(ds.img_ids.index(image_of[aid]))), (aid, s.file)
            assert aid in per_image, "counted in its image's annotation(i)['skipped']"
        assert sum(f"annotation {aid} of {s.file}:" in m for m in records) == 1, aid
    # per-image accounting adds up: every skip but the orphans belongs to exactly one image
    assert sum(len(ds.annotation(i)["skipped"]) for i in range(len(ds))) == len(ds.skips) - len(corpus.orphan_anns)


def test_degenerate_but_valid_annotations_are_kept_as_pycocotools_rasterises_them(corpus, ds):
    s = ds.load(corpus.index["polygons"])
    ids = s.ann_ids.tolist()
    h, w = s.height, s.width

    def mask_of(case):
        return s.masks[ids.index(corpus.ann[case])]

    bowtie = mask_utils.decode(mask_utils.frPyObjects([[10, 10, 60, 60, 60, 10, 10, 60]], h, w))[..., 0] > 0
    assert bowtie.sum() > 500 and np.array_equal(mask_of("self_intersecting"), bowtie)
    m = mask_of("partly_outside")  # polygon (130, 80)-(200, 150) on a 160 x 120 image
    assert m.any() and tight(m)[2:] == [w, h] and tight(m)[:2] == [130, 80]
    rect = mask_utils.decode(mask_utils.frPyObjects([[70, 20, 100, 20, 100, 60, 70, 60]], h, w))[..., 0] > 0
    assert np.array_equal(mask_of("with_2_point_part"), rect)
    want = np.zeros((h, w), bool)
    want[70:110, 20:50] = True
    assert np.array_equal(mask_of("uncompressed_rle"), want)
    assert ds.meta(corpus.index["polygons"]).boxes.tolist()[ids.index(corpus.ann["uncompressed_rle"])] == \
        [20, 70, 50, 110]


# ---------------------------------------------------------------- good images


def test_every_image_decodes_to_the_pixels_it_was_made_from(corpus, ds):
    assert len(corpus.expected_pixels) >= 16
    for i, (want, tol) in corpus.expected_pixels.items():
        got = ds.read_image(i)
        assert got.shape == want.shape and got.dtype == np.uint8
        if tol == 0:
            assert np.array_equal(got, want), ds.file_path(i).name
        else:
            assert np.abs(got.astype(int) - want).mean() < tol, ds.file_path(i).name
        h = ds.probe(i)
        assert (h.height, h.width) == got.shape[:2]
    assert ds.probe(corpus.index["exif6"]).orientation == 6


def test_every_good_image_augments_with_every_invariant(corpus, ds):
    pasted = 0
    for i in corpus.good:
        if i == corpus.index["huge"]:
            continue  # test_8k_image
        assert len(ds.meta(i).boxes) == corpus.instances[i], ds.file_path(i).name
        for seed in (0, 1):
            out, dst = run_checked(ds, i, OCP, seed=seed)
            assert len(dst) == corpus.instances[i]
            pasted += int(out.pasted.sum())
    assert pasted > len(corpus.good)


def test_zero_and_300_instances(corpus, ds):
    empty, many = corpus.index["empty"], corpus.index["many"]
    assert len(ds.load(empty)) == 0 and len(ds.meta(empty).boxes) == 0
    out, _ = run_checked(ds, empty, OCP, seed=3)
    assert out.pasted.all() and len(out) > 0  # pastes land on an image without people
    s = ds.load(many)
    assert len(s) == 300 and s.masks.any(axis=(1, 2)).all()
    # people of the 120 x 160 sources are small next to 256 x 320: take every size, from two images
    out, dst = run_checked(ds, many, OCPConfig.ocp(prob=1.0, paste_num=(3, 4), min_size_paste=0.0, basket_size=2),
                           seed=3)
    assert out.info["pasted"] == 3 and len(out) == 303 - out.info["dropped_existing"] - out.info["dropped_pasted"]


def test_crowd_regions_stay_ignore_regions(corpus, ds):
    i = corpus.index["crowd"]
    s = ds.load(i)
    assert not set(s.ann_ids.tolist()) & corpus.crowd_anns
    assert len(s.crowd_masks) == 2
    want = np.zeros((s.height, s.width), bool)
    want[0:30, 0:40] = True
    assert any(np.array_equal(c, want) for c in s.crowd_masks)
    for seed in range(3):
        out, _ = run_checked(ds, i, OCPConfig.basic(prob=1.0), seed=seed)
        assert not set(out.ann_ids.tolist()) & corpus.crowd_anns


def test_keypoints_exactly_on_the_border_are_kept_and_transformed(corpus, ds):
    i = corpus.index["border_keypoints"]
    s = ds.load(i)
    kp = s.keypoints[s.ann_ids.tolist().index(corpus.ann["border_keypoints"])]
    n = len(corpus.border_keypoints)
    assert kp[:n, :2].tolist() == [list(p) for p in corpus.border_keypoints] and (kp[:n, 2] == 2).all()
    for seed in range(3):  # as a destination
        run_checked(ds, i, OCP, seed=seed)
        out = reference_sample(ds, i, epoch=0, seed=seed, cfg=OCP, output_size=64)
        lab = out.keypoints[..., 2] > 0
        assert (out.keypoints[..., :2][lab] >= 0).all() and (out.keypoints[..., :2][lab] <= 64).all()
    # as a paste source: the border person is the one large candidate of its image
    src_only = GoodBaskets(corpus, pool=[i])
    moved = 0
    for seed in range(4):
        out, _ = run_checked(src_only, corpus.index["png_rgb"], OCPConfig.ocp(prob=1.0, min_size_paste=0.3),
                             seed=seed)
        rows = np.flatnonzero(out.ann_ids == corpus.ann["border_keypoints"])
        moved += int((out.keypoints[rows, :, 2] > 0).sum())
    assert moved > 0, "the border person was never pasted"


def test_basket_without_eligible_candidate_leaves_the_sample_unchanged(corpus, ds, tmp_path):
    i = corpus.index["png_rgb"]
    plan = plan_for(ds, i, cfg=OCP, basket=[corpus.index["empty"], corpus.index["tiny"]])
    assert plan.pastes == ()
    dst = ds.load(i)
    out = apply(plan, dst, [None, None])
    check_invariants(out, dst, plan, [None, None])
    ann_file, img_dir = write_no_candidate_corpus(tmp_path)
    nc = CocoInstances(ann_file, img_dir)
    for k in range(len(nc)):
        out, dst = run_checked(nc, k, OCPConfig.ocp(prob=1.0, basket_size=2), seed=k)
        assert out is dst and out.pasted.sum() == 0
        lsj = reference_sample(nc, k, epoch=0, seed=k, cfg=OCP, output_size=64)
        assert lsj.image.shape == (64, 64, 3) and not lsj.pasted.any()


def test_8k_image(corpus, ds):
    i = corpus.index["huge"]
    assert ds.probe(i) == ImageHeader(8192, 8192, "JPEG", "RGB", 1, 8)
    cfg = OCPConfig.ocp(prob=1.0, min_size_paste=0.0, paste_num=(2, 3))  # the small sources become candidates
    out, dst = run_checked(ds, i, cfg, seed=0)
    assert out.pasted.sum() == 2 and dst.image.shape == (8192, 8192, 3)
    small = reference_sample(ds, i, epoch=0, seed=0, cfg=cfg, output_size=256)
    assert small.image.shape == (256, 256, 3) and small.masks.shape[1:] == (256, 256)
    assert small.ann_ids.tolist() == [a for a in out.ann_ids.tolist() if a in small.ann_ids.tolist()]
    for m, b in zip(small.masks, small.boxes):
        assert m.any() and b.tolist() == tight(m)


# ---------------------------------------------------------------- bad annotation files


def test_bad_annotation_files_are_errors_naming_the_file(tmp_path):
    for path, why in [(write_invalid_json(tmp_path), "not a valid json file"),
                      (write_not_coco_json(tmp_path), "not a COCO annotation file"),
                      (tmp_path / "absent.json", "annotation file not found")]:
        with pytest.raises(DataError, match=why) as e:
            CocoInstances(path, tmp_path)
        assert e.value.file == str(path)
    path, image_id = write_image_without_size(tmp_path)
    with pytest.raises(DataError, match=f"image id {image_id} .*width and height must be positive integers") as e:
        CocoInstances(path, tmp_path)
    assert e.value.file == str(path)
