"""Train an mmdet 3 model with OC&P: mmdet's ``tools/train.py`` plus ``--dali`` and ``--pretrained``.

    python trainers/train_mmdet.py --config configs/mask_rcnn/mask-rcnn_r50_fpn_ocp_coco-person.py [--dali]
        [--pretrained] [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...] [--launcher pytorch]
    torchrun --nproc_per_node 2 trainers/train_mmdet.py --config ... --launcher pytorch [--dali]

Without ``--dali`` the config's own ``train_dataloader`` runs (the CPU path: ``OCPMixDataset`` +
``OcclusionCopyPaste`` in torch DataLoader workers). With ``--dali`` the training data come from the DALI pipeline
(``DALIDetDataLoader``: GPU decode and OC&P kernels when CUDA is available, the same graph on CPU otherwise),
sharded by rank, with the config's dataset, batch size and ``OcclusionCopyPaste`` entry and its ``ocp_dali``
settings. Either way the OC&P settings are the pipeline entry's, overrides included
(``--cfg-options train_dataloader.dataset.pipeline.1.basket_size=3`` in a Mask R-CNN config).

Backbone weights: configs that ask for pretrained weights (``init_cfg=dict(type="Pretrained", ...)``, e.g.
``torchvision://resnet50``) get them only with ``--pretrained`` (downloads need a network); the default,
``--no-pretrained``, initialises them at random. The log says which.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description="Train an mmdet detector with OC&P")
    p.add_argument("--config", required=True, help="train config file path")
    p.add_argument("--dali", action="store_true", help="feed training from the DALI pipeline")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False,
                   help="load the pretrained weights the config names (e.g. torchvision://resnet50; needs a network "
                        "or a filled cache); default: random initialisation")
    p.add_argument("--work-dir", help="the dir to save logs and models")
    p.add_argument("--resume", nargs="?", type=str, const="auto",
                   help="resume from CKPT, or from the latest checkpoint in the work dir when no path is given")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def pretrained_inits(node, path: str = "model") -> list[tuple[str, dict]]:
    """``(path, owner)`` of every ``init_cfg=dict(type="Pretrained", ...)`` in a model config (``owner`` holds it)."""
    found: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        init = node.get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            found.append((path, node))
        for key, value in node.items():
            if key != "init_cfg":
                found += pretrained_inits(value, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += pretrained_inits(value, f"{path}.{i}")
    return found


def choose_weights(cfg, pretrained: bool) -> list[str]:
    """Keep (``pretrained``) or drop the config's pretrained initialisations; the log lines that say which."""
    found = pretrained_inits(cfg.model)
    if not found:
        return ["weights: the config names no pretrained weights: random initialisation"]
    lines = []
    for path, owner in found:
        checkpoint = owner["init_cfg"].get("checkpoint")
        if pretrained:
            lines.append(f"weights: {path} from {checkpoint} (--pretrained)")
        else:
            owner["init_cfg"] = None
            lines.append(f"weights: {path} initialised at random (--no-pretrained, the default; the config names "
                         f"{checkpoint}: pass --pretrained to load it)")
    return lines


def use_dali_loader(cfg) -> None:
    """Put a ``DALIDetDataLoader`` config in place of ``train_dataloader``, built by ``OCPRunner``: the same
    dataset, batch size and ``OcclusionCopyPaste`` entry (after ``--cfg-options``), the geometry of its pipeline
    (``ocp_dali.mmdet.loader.pipeline_geometry``), plus the ``ocp_dali`` settings (``placement="paste_first"``
    for ocp_dali's paste-then-geometry variant)."""
    import dataclasses

    from ocp_dali.mmdet.loader import pipeline_geometry

    if cfg.get("runner_type", "OCPRunner") != "OCPRunner":
        raise ValueError(f"--dali needs runner_type='OCPRunner' (ocp_dali.mmdet.loader), the config has "
                         f"{cfg.runner_type!r}")
    train = cfg.train_dataloader
    ocp = [t for t in train.dataset.get("pipeline", []) if t.get("type") == "OcclusionCopyPaste"]
    if len(ocp) != 1:
        raise ValueError(f"--dali takes the OC&P settings from the one OcclusionCopyPaste entry of "
                         f"train_dataloader.dataset.pipeline; found {len(ocp)}")
    settings = dict(cfg.get("ocp_dali", {}))
    geometry = pipeline_geometry(train.dataset, settings.pop("placement", "seed"))
    cfg.train_dataloader = dict(type="DALIDetDataLoader", dataset=train.dataset.dataset, ocp=ocp[0],
                                geometry=dataclasses.asdict(geometry), batch_size=train.batch_size, **settings)
    cfg.runner_type = "OCPRunner"
    # the dumped config names the module that registers OCPRunner, so it runs again as it is
    imports = cfg.get("custom_imports", dict(imports=[], allow_failed_imports=False))
    if "ocp_dali.mmdet.loader" not in imports["imports"]:
        cfg.custom_imports = dict(imports, imports=[*imports["imports"], "ocp_dali.mmdet.loader"])


def configure(args):
    """The config file with the command line applied; the log lines of the choices made."""
    import torch
    from mmengine.config import Config

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.launcher == "pytorch" and not torch.cuda.is_available():
        # CPU-only DDP (tests, CPU machines): MMEngine's init_dist calls torch.cuda.set_device and its default
        # wrapper passes GPU device_ids, so start gloo here (MMEngine then skips init_dist) and wrap without devices.
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=cfg.get("find_unused_parameters", False))
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    lines = choose_weights(cfg, args.pretrained)
    hooks = cfg.get("custom_hooks", [])
    if not any(h.get("type") == "ProgressHook" for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type="ProgressHook")]
    if args.dali:
        use_dali_loader(cfg)
    return cfg, lines


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import ocp_dali.mmdet  # noqa: F401  (registers the transform, dataset and hooks)
    import ocp_dali.mmdet.loader  # noqa: F401  (registers OCPRunner, which builds the --dali loader)
    from ocp_dali.mmdet.checkpoint import trust_own_checkpoints

    setup_cache_size_limit_of_dynamo()
    trust_own_checkpoints()
    cfg, lines = configure(args)
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    for line in lines:
        runner.logger.info(line)
    runner.train()
    close = getattr(runner.train_dataloader, "close", None)  # the DALI loader's worker processes
    if close is not None:
        close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
