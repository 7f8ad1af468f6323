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
