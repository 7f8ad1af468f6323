"""The configs and the trainer's handling of them, without training: one source of truth for the OC&P settings
(an override reaches the CPU pipeline and the --dali loader), config errors named, pretrained weights only on
request."""
import importlib.util

import pytest

from conftest import ROOT, data_path

pytest.importorskip("mmdet", reason="mmdet is not installed")
MASK_RCNN = "configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py"
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("configs/*/*.py") if p.parent.name != "_base_")


def trainer():
    """``trainers/train_mmdet.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("train_mmdet", ROOT / "trainers" / "train_mmdet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def configure(*argv: str):
    """The config as the trainer makes it from the command line, data root pointed at the team's coco_mini."""
    root = str(data_path("coco_mini")) + "/"
    t = trainer()
    cfg, lines = t.configure(t.parse_args(["--config", str(ROOT / MASK_RCNN), *argv]))
    return cfg, lines, root


@pytest.mark.parametrize("config", CONFIGS)
def test_configs_keep_the_ocp_settings_in_the_pipeline_only(config):
    from mmengine.config import Config

    cfg = Config.fromfile(str(ROOT / config))
    entries = [t for t in cfg.train_dataloader.dataset.pipeline if t["type"] == "OcclusionCopyPaste"]
    assert len(entries) == 1, "one OcclusionCopyPaste entry: what both paths read"
    # a top-level copy (the former `ocp_transform`) would invite an override that never reaches the pipeline
    copies = [k for k, v in cfg.items() if isinstance(v, dict) and v.get("type") == "OcclusionCopyPaste"]
    assert not copies, copies


@pytest.mark.parametrize("dali", [False, True])
def test_an_override_of_the_ocp_settings_reaches_the_pipeline(dali):
    from mmengine.registry import DATASETS, init_default_scope

    import ocp_dali.mmdet  # noqa: F401
    from ocp_dali import OCPConfig
    from ocp_dali.mmdet.loader import OCPRunner

    # the Mask R-CNN configs: entry 1, after the destination's RandomResize (the seed's order)
    options = ["train_dataloader.dataset.pipeline.1.preset=basic", "train_dataloader.dataset.pipeline.1.basket_size=3",
               "train_dataloader.dataset.pipeline.1.seed=7"]
    cfg, _, root = configure(*(["--dali"] if dali else []), "--cfg-options", *options)
    init_default_scope("mmdet")
    if dali:
        cfg.train_dataloader.dataset.data_root = root
        loader = OCPRunner.build_dataloader(cfg.train_dataloader)
        ocp, seed = loader.loader.cfg, loader.loader.kw["seed"]
        assert loader.describe().startswith("DALI loader: device cpu, 1 worker processes, 1 threads; batch size 2")
        loader.close()
    else:
        cfg.train_dataloader.dataset.dataset.data_root = root
        transform = DATASETS.build(cfg.train_dataloader.dataset).pipeline[1]
        ocp, seed = transform.cfg, transform.seed
    assert ocp == OCPConfig.basic(basket_size=3) and seed == 7


def test_a_misspelt_ocp_field_in_a_config_names_the_valid_ones():
    from mmengine.registry import DATASETS, init_default_scope

    import ocp_dali.mmdet  # noqa: F401

    cfg, _, root = configure("--cfg-options", "train_dataloader.dataset.pipeline.1.basket_sise=3")
    cfg.train_dataloader.dataset.dataset.data_root = root
    init_default_scope("mmdet")
    with pytest.raises(ValueError, match="no field 'basket_sise' \\(did you mean 'basket_size'\\?\\); valid fields: "
                                         "prob, basket_size"):
        DATASETS.build(cfg.train_dataloader.dataset)


@pytest.mark.parametrize("config, want", [
    ("configs/mask_rcnn/mask-rcnn_r50_fpn_ocp_coco-person.py",
     dict(kind="resize", scales=((1333, 640), (1333, 800)), placement="seed")),
    ("configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py",
     dict(kind="resize", scales=((256, 192), (256, 256)), placement="seed")),
    ("configs/mask2former/mask2former_swin-s_ocp_coco-person.py",
     dict(kind="lsj", size=(1024, 1024), ratio_range=(0.1, 2.0), placement="seed")),
    ("configs/mask2former/mask2former_r18_ocp_tiny-cpu.py",
     dict(kind="lsj", size=(256, 256), ratio_range=(0.5, 1.5), placement="seed")),
])
def test_dali_takes_the_geometry_of_the_config_pipeline(config, want):
    """--dali trains on the config's own train geometry in the seed's order (Mask R-CNN: the destination's
    multi-scale resize, sources raw; Mask2Former: LSJ of every image), or ocp_dali's variant on request."""
    from ocp_dali import Geometry

    t = trainer()
    cfg, _ = t.configure(t.parse_args(["--config", str(ROOT / config), "--dali"]))
    got = Geometry(**cfg.train_dataloader.geometry)
    assert {k: getattr(got, k) for k in want} == want
    assert cfg.train_dataloader.targets == "visible"  # what the model trains on: no amodal work in the loader
    cfg, _ = t.configure(t.parse_args(["--config", str(ROOT / config), "--dali", "--cfg-options",
                                       "ocp_dali.placement=paste_first"]))
    assert Geometry(**cfg.train_dataloader.geometry).placement == "paste_first"


def test_a_pipeline_that_resizes_the_sources_too_is_refused_with_dali():
    from ocp_dali.mmdet.loader import pipeline_geometry

    dataset = dict(pipeline=[dict(type="OcclusionCopyPaste")],
                   dataset=dict(pipeline=[dict(type="LoadImageFromFile"), dict(type="Resize", scale=(1333, 800))]))
    with pytest.raises(ValueError, match="resizes every image.*before OcclusionCopyPaste"):
        pipeline_geometry(dataset)


@pytest.mark.parametrize("flag", [[], ["--no-pretrained"], ["--pretrained"]])
def test_pretrained_backbone_weights_only_on_request(flag):
    t = trainer()
    cfg, lines = t.configure(t.parse_args(["--config", str(ROOT / "configs/mask_rcnn/"
                                                           "mask-rcnn_r50_fpn_ocp_coco-person.py"), *flag]))
    if flag == ["--pretrained"]:
        assert cfg.model.backbone.init_cfg.checkpoint == "torchvision://resnet50"
        assert lines == ["weights: model.backbone from torchvision://resnet50 (--pretrained)"]
    else:
        assert cfg.model.backbone.init_cfg is None and not t.pretrained_inits(cfg.model)
        assert lines == ["weights: model.backbone initialised at random (--no-pretrained, the default; the config "
                         "names torchvision://resnet50: pass --pretrained to load it)"]
