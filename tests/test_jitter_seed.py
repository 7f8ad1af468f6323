"""Image jitter arithmetic equals the seed's: mmcv's cv2 steps (colour rounded half to even, brightness, contrast and
sharpness truncated, the contrast mean rounded half to even, the sharpness filter over the border with reflected
neighbours, OpenCV's grey weights). Hand-computed cases first (they fail if a rounding regresses), then cv2 itself
on every uint8 pair and on random crops."""
import numpy as np
import pytest

from ocp_dali.photometric import (blend_floor, blend_round_even, grey, jitter_image, round_half_even_div,
                                  smooth3x3)

cv2 = pytest.importorskip("cv2")

SMOOTH = np.array([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13


def px(*rgb) -> np.ndarray:
    """A (1, len, 3) uint8 crop of the given RGB pixels."""
    return np.array([rgb], dtype=np.uint8)


def only(step: int, n: int) -> tuple[int, int, int, int]:
    f = [10, 10, 10, 10]
    f[step] = n
    return tuple(f)


def test_grey_uses_opencvs_15_bit_weights():
    # (9798 * 200 + 19235 * 100 + 3735 * 50 + 16384) >> 15 = 4086234 >> 15 = 124 (124.70 truncated)
    assert grey(px((200, 100, 50)))[0, 0] == 124
    # (0, 1, 201): 786354 >> 15 = 23 (23.998); PIL's 16-bit weights would give 1572909 >> 16 = 24
    assert grey(px((0, 1, 201)))[0, 0] == 23
    assert grey(px((0, 0, 221)))[0, 0] == 25  # (3735 * 221 + 16384) >> 15 = 841819 >> 15 = 25 (25.69)


def test_colour_step_rounds_half_to_even():
    # (R, G, B) = (0, 0, 221): grey 25; colour 0.9: R = G = 25 * 0.1 + 0 * 0.9 = 2.5 -> 2 (half to even; half up
    # would give 3), B = 2.5 + 198.9 = 201.4 -> 201
    assert jitter_image(px((0, 0, 221)), only(0, 9)).tolist() == [[[2, 2, 201]]]
    # (7, 0, 91): grey (9798*7 + 3735*91 + 16384) >> 15 = 12; colour 1.1: R = 1.1 * 7 - 0.1 * 12 = 6.5 -> 6,
    # G = -1.2 -> 0, B = 100.1 - 1.2 = 98.9 -> 99 (rounded, not truncated)
    assert jitter_image(px((7, 0, 91)), only(0, 11)).tolist() == [[[6, 0, 99]]]


def test_brightness_step_truncates():
    # 1 * 1.5 = 1.5 -> 1; 3 * 1.5 = 4.5 -> 4; 9 * 0.5 = 4.5 -> 4; 200 * 1.9 = 380 -> 255
    assert jitter_image(px((1, 3, 200)), only(1, 15)).tolist() == [[[1, 4, 255]]]
    assert jitter_image(px((9, 9, 9)), only(1, 5)).tolist() == [[[4, 4, 4]]]


def test_contrast_step_truncates_around_the_mean_rounded_half_to_even():
    # greys 0 and 1: mean 0.5 -> 0 (half to even); contrast 1.5: 1.5 * 1 - 0.5 * 0 = 1.5 -> 1
    assert jitter_image(px((0, 0, 0), (1, 1, 1)), only(2, 15)).tolist() == [[[0, 0, 0], [1, 1, 1]]]
    # greys 1 and 2: mean 1.5 -> 2; contrast 0.5: 0.5 * 1 + 0.5 * 2 = 1.5 -> 1, 0.5 * 2 + 0.5 * 2 = 2
    assert jitter_image(px((1, 1, 1), (2, 2, 2)), only(2, 5)).tolist() == [[[1, 1, 1], [2, 2, 2]]]
    assert round_half_even_div(5, 2) == 2 and round_half_even_div(7, 2) == 4 and round_half_even_div(8, 3) == 3


def test_sharpness_step_filters_the_border_with_reflected_neighbours():
    # one row 0, 13, 26 (all channels); the single row reflects onto itself (rows -1, 0, 1 -> 0, 0, 0), columns
    # -1 -> 1 and 3 -> 1 (BORDER_REFLECT_101): smooth = (4 v + 3 * (left + v + right)) / 13, rounded
    #   x=0: 3 * (13 + 0 + 13) = 78 -> 6;  x=1: 52 + 3 * 39 = 169 -> 13;  x=2: 104 + 3 * 52 = 260 -> 20
    crop = px((0, 0, 0), (13, 13, 13), (26, 26, 26))
    assert jitter_image(crop, only(3, 0))[0, :, 0].tolist() == [6, 13, 20]
    # factor 1.4: 1.4 * v - 0.4 * smooth, truncated: 0 - 2.4 -> 0; 18.2 - 5.2 = 13; 36.4 - 8 = 28.4 -> 28
    assert jitter_image(crop, only(3, 14))[0, :, 0].tolist() == [0, 13, 28]


def test_blends_equal_cv2_add_weighted_on_every_uint8_pair():
    """The seed's blends are cv2.addWeighted: float32 then astype(uint8) (brightness, contrast, sharpness) and uint8
    (colour). Equal on every (pixel, degenerate) pair; the colour step's exact .5 ties (factors 0.9, 1.1) are left
    to OpenCV's float32 rounding error, where ocp_dali rounds half to even."""
    v, d = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    img, deg = v.astype(np.uint8), d.astype(np.uint8)
    for n in range(0, 20):
        f = n / 10.0
        seed = np.clip(cv2.addWeighted(img.astype(np.float32), f, deg.astype(np.float32), 1 - f, 0), 0, 255)
        assert np.array_equal(blend_floor(deg, img, n), seed.astype(np.uint8)), n
    for n in range(8, 12):
        seed = cv2.addWeighted(img, n / 10.0, deg, 1 - n / 10.0, 0)
        tie = (d * (10 - n) + v * n) % 10 == 5
        ours = blend_round_even(deg, img, n)
        assert np.array_equal(ours[~tie], seed[~tie]), n
        assert np.count_nonzero(ours[tie] != seed[tie]) <= 0.02 * tie.sum(), n  # measured: 4, 105 of 6552 ties


def test_grey_and_smooth_equal_cv2():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (300, 301, 3), dtype=np.uint8)
    assert np.array_equal(grey(rgb), cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY))
    for h, w in ((1, 1), (1, 2), (2, 1), (1, 7), (2, 2), (3, 3), (5, 2), (17, 23)):
        crop = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert np.array_equal(smooth3x3(crop), cv2.filter2D(crop, -1, SMOOTH)), (h, w)


def seed_steps(rgb: np.ndarray, factors) -> np.ndarray:
    """The seed's four steps written out with cv2 on the BGR crop (mmcv 1.x, cv2 backend), as RGB uint8."""
    img = np.ascontiguousarray(rgb[..., ::-1])
    f = [n / 10.0 for n in factors]
    g3 = np.repeat(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2)
    img = cv2.addWeighted(img, f[0], g3, 1 - f[0], 0)

    def trunc_blend(a, deg, k):
        out = cv2.addWeighted(a.astype(np.float32), k, deg.astype(np.float32), 1 - k, 0)
        return np.clip(out, 0, 255).astype(np.uint8)
    img = trunc_blend(img, np.zeros_like(img), f[1])
    mean = round(float(np.sum(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))) / (img.shape[0] * img.shape[1]))
    img = trunc_blend(img, np.full_like(img, mean), f[2])
    img = trunc_blend(img, cv2.filter2D(img, -1, SMOOTH), f[3])
    return img[..., ::-1]


@pytest.mark.parametrize("seed", range(6))
def test_jitter_image_equals_the_seeds_steps_on_random_crops(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    crop = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(20):
        # colour 0.8 and 1.0 have no .5 ties (see test_blends_equal_cv2_add_weighted_on_every_uint8_pair)
        factors = (int(rng.choice([8, 10])), int(rng.integers(5, 20)), int(rng.integers(5, 20)),
                   int(rng.integers(0, 15)))
        assert np.array_equal(jitter_image(crop, factors), seed_steps(crop, factors)), (h, w, factors)
