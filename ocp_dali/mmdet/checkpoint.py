"""Loading MMEngine's own checkpoints under torch >= 2.6 (``torch.load(weights_only=True)`` by default)."""
from __future__ import annotations

import os.path as osp


def trust_own_checkpoints() -> None:
    """Let MMEngine load its own checkpoints again.

    torch.load now defaults to ``weights_only=True``, which rejects what MMEngine stores besides the weights
    (message hub ``HistoryBuffer``s, numpy scalars, config dicts) and so breaks ``--resume``. The checkpoints loaded
    through this are the ones our trainer wrote or the user named on the command line, so they are trusted: local
    files are loaded with ``weights_only=False``. Remote schemes keep MMEngine's defaults.
    """
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes="", force=True)
    def load_trusted_local(filename, map_location=None):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        return torch.load(filename, map_location=map_location, weights_only=False)
