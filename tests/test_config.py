import dataclasses

import pytest

from ocp_dali import OCPConfig


def test_seed_names_and_defaults():
    c = OCPConfig()
    assert (c.prob, c.basket_size, c.paste_num, c.min_size_paste, c.min_size_occ) == (0.8, 1, (1, 3), 0.1, 0.01)
    assert (c.targeted_paste_prob, c.targeted_paste_buffer) == (0.8, 0.4)
    assert (c.aug_paste_geom_jitter, c.aug_paste_img_jitter, c.blend_sigma, c.source) == (False, False, 0.0, "dataset")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.prob = 0.5  # type: ignore[misc]


def test_presets_reproduce_the_seed_rows():
    ocp = OCPConfig.ocp()
    assert ocp.aug_paste_geom_jitter and ocp.aug_paste_img_jitter and ocp.targeted_paste_prob == 0.8
    basic = OCPConfig.basic()
    assert (basic.basket_size, basic.paste_num, basic.min_size_paste, basic.targeted_paste_prob) == (5, (1, 10), 0.0, 0.0)
    simple = OCPConfig.simple()
    assert simple.mode == "simple" and simple.basket_size == 1 and simple.max_num_pasted == 100
    assert (simple.bbox_occluded_thr, simple.mask_occluded_thr) == (10, 300)
    assert OCPConfig.ocp(blend_sigma=2.0).blend_sigma == 2.0


def test_list_paste_num_from_seed_configs_is_accepted():
    assert OCPConfig(paste_num=[1, 3]).paste_num == (1, 3)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(prob=1.5), "prob"),
        (dict(basket_size=0), "basket_size"),
        (dict(paste_num=(3, 3)), "paste_num"),
        (dict(paste_num=(-1, 2)), "paste_num"),
        (dict(paste_num=(1,)), "paste_num"),
        (dict(min_size_paste=-0.1), "min_size_paste"),
        (dict(targeted_paste_prob=2), "targeted_paste_prob"),
        (dict(blend_sigma=-1), "blend_sigma"),
        (dict(source="disk"), "source"),
        (dict(mode="fancy"), "mode"),
        (dict(mode="simple", basket_size=2), "basket_size"),
    ],
)
def test_bad_values_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"OCPConfig.{field}="):
        OCPConfig(**kw)


def test_from_preset_is_the_preset_with_overrides():
    assert OCPConfig.from_preset("basic", prob=0.5) == OCPConfig.basic(prob=0.5)
    assert OCPConfig.from_preset("simple") == OCPConfig.simple()
    assert OCPConfig.from_preset(None, basket_size=3) == OCPConfig(basket_size=3)
    with pytest.raises(ValueError, match="unknown preset 'fancy'; presets: ocp, basic, simple"):
        OCPConfig.from_preset("fancy")


@pytest.mark.parametrize("make", [lambda **kw: OCPConfig.from_preset("ocp", **kw), OCPConfig.ocp().replace])
def test_unknown_field_is_a_value_error_listing_the_valid_names(make):
    with pytest.raises(ValueError, match="no field 'basket_sise' \\(did you mean 'basket_size'\\?\\); valid fields: "
                                         "prob, basket_size, paste_num") as e:
        make(basket_sise=3)
    assert all(name in str(e.value) for name in OCPConfig.field_names())


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(prob="0.5"), "OCPConfig.prob='0.5': must be a number (float), got str"),
        (dict(basket_size=2.0), "OCPConfig.basket_size=2.0: must be an int, got float"),
        (dict(basket_size=True), "OCPConfig.basket_size=True: must be an int, got bool"),
        (dict(paste_num=(1, 2.5)), "OCPConfig.paste_num=(1, 2.5): must be a pair of ints (lo, hi), got tuple"),
        (dict(aug_paste_geom_jitter="yes"), "OCPConfig.aug_paste_geom_jitter='yes': must be a bool, got str"),
        (dict(min_size_paste=float("nan")), "OCPConfig.min_size_paste=nan: must be a finite number"),
        (dict(min_size_occ=float("inf")), "OCPConfig.min_size_occ=inf: must be a finite number"),
        (dict(blend_sigma=-float("inf")), "OCPConfig.blend_sigma=-inf: must be a finite number"),
    ],
)
def test_wrong_types_and_non_finite_values_name_the_field(kw, message):
    with pytest.raises(ValueError) as e:
        OCPConfig.from_preset("ocp", **kw)
    assert str(e.value) == message


def test_numbers_are_stored_as_their_field_types():
    np = pytest.importorskip("numpy")
    c = OCPConfig(prob=1, basket_size=np.int64(2), paste_num=[np.int32(1), 4], min_size_paste=np.float32(0.25))
    assert (type(c.prob), type(c.basket_size), c.paste_num, type(c.paste_num[0])) == (float, int, (1, 4), int)
    assert c.min_size_paste == 0.25 and type(c.min_size_paste) is float
