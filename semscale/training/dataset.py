"""The patch sampler as a ``keras.utils.PyDataset``: what :func:`semscale.training.fit.train_member` feeds
to ``model.fit``.

This module imports Keras at its top; import it only where Keras is needed anyway (the training does so
inside its functions), so that ``semscale --help`` and the keras-free sampler stay light.
"""

from __future__ import annotations

import keras

from semscale.config import TrainingConfig
from semscale.store.layout import CampaignStore
from semscale.training.augment import Augment
from semscale.training.sampler import PatchSampler
from semscale.training.splits import TileSplit

__all__ = ["PatchDataset"]


class PatchDataset(PatchSampler, keras.utils.PyDataset):
    """Random, augmented P×P training windows (a :class:`~semscale.training.sampler.PatchSampler`) served
    by Keras' prefetching workers: ``cfg.workers`` threads (or processes with ``cfg.use_multiprocessing``;
    threads suffice, Zarr decompression releases the GIL) keep up to ``cfg.max_queue_size`` batches ready.
    Batches are the sampler's, in order, whatever the number of workers.
    """

    def __init__(self, store: CampaignStore, split: TileSplit, cfg: TrainingConfig, *, member: int = 0,
                 augment: Augment | None = None) -> None:
        keras.utils.PyDataset.__init__(self, workers=cfg.workers, use_multiprocessing=cfg.use_multiprocessing,
                                       max_queue_size=cfg.max_queue_size)
        PatchSampler.__init__(self, store, split, cfg, member=member, augment=augment)
