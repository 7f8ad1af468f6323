"""Train an mmdet 3 model with OC&P: mmdet's ``tools/train.py`` plus ``--dali``.

    python trainers/train_mmdet.py --config configs/mask_rcnn/mask-rcnn_r50_fpn_ocp_coco-person.py [--dali]
        [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...] [--launcher pytorch]
    torchrun --nproc_per_node 2 trainers/train_mmdet.py --config ... --launcher pytorch [--dali]

Without ``--dali`` the config's own ``train_dataloader`` runs (the CPU path: ``OCPMixDataset`` +
``OcclusionCopyPaste`` in torch DataLoader workers). With ``--dali`` the training data come from the DALI pipeline
(``DALIDetDataLoader``: GPU decode and OC&P kernels when CUDA is available, the same graph on CPU otherwise),
sharded by rank, with the OC&P parameters of the config's ``OcclusionCopyPaste`` and the ``ocp_dali`` settings.
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
    p.add_argument("--work-dir", help="the dir to save logs and models")
    p.add_argument("--resume", nargs="?", type=str, const="auto",
                   help="resume from CKPT, or from the latest checkpoint in the work dir when no path is given")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def dali_loader(cfg, runner):
    """``DALIDetDataLoader`` for the config: same data, same OC&P parameters, sharded by the runner's rank."""
    import torch
    from mmengine.dist import get_dist_info

    from ocp_dali import CocoInstances, OCPConfig
    from ocp_dali.mmdet.loader import DALIDetDataLoader

    ds_cfg = cfg.train_dataloader.dataset
    inner = ds_cfg.dataset
    transform = next(t for t in ds_cfg.pipeline if t["type"] == "OcclusionCopyPaste")
    params = {k: v for k, v in transform.items() if k not in ("type", "seed", "preset")}
    preset = transform.get("preset")
    ocp_cfg = getattr(OCPConfig, preset)(**params) if preset else OCPConfig(**params)
    root = inner.get("data_root", "")
    dataset = CocoInstances(osp.join(root, inner.ann_file), osp.join(root, inner.data_prefix["img"]),
                            classes=list(inner.metainfo["classes"]))
    rank, world = get_dist_info()
    opts = dict(cfg.get("ocp_dali", {}))
    return DALIDetDataLoader(dataset, ocp_cfg, device="gpu" if torch.cuda.is_available() else "cpu",
                             batch_size=cfg.train_dataloader.batch_size, seed=int(transform.get("seed", 0)),
                             shard_id=rank, num_shards=world, **opts)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import torch

    import ocp_dali.mmdet  # noqa: F401  (registers the transform, dataset and hook)
    from ocp_dali.mmdet.checkpoint import trust_own_checkpoints

    setup_cache_size_limit_of_dynamo()
    trust_own_checkpoints()
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
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    if args.dali:
        # the loop takes whatever object is in place of the dataloader config when it is built in train()
        runner._train_dataloader = dali_loader(cfg, runner)
    runner.train()
    if args.dali:
        runner._train_dataloader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
