"""Tests of semscale.training.dataset: PatchDataset is the sampler as a keras.utils.PyDataset."""

from __future__ import annotations

import pickle

import keras
import numpy as np

from semscale.config import TrainingConfig
from semscale.training.dataset import PatchDataset
from semscale.training.sampler import PatchSampler
from semscale.training.splits import make_split

P = 32


def cfg(**kw) -> TrainingConfig:
    return TrainingConfig(patch_size=P, **kw)


def test_sampler_keras_prefetch_threads_same_batches(data_store):
    store = data_store
    """Batches fetched by Keras' threaded enqueuer equal the direct ones, in order."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    s = make_split(store, cfg(test_tiles_fraction=0.2, seed=1))
    ds = PatchDataset(store, s, cfg(workers=3, seed=9, batch_size=8, steps_per_epoch=4))
    direct = [ds.batch(i, 0)[1] for i in range(len(ds))]
    adapter = PyDatasetAdapter(ds)
    adapter.on_epoch_begin()
    got = [np.asarray(b[1]) for b in adapter.get_numpy_iterator()]
    adapter.on_epoch_end()
    assert len(got) == len(direct)
    for g, d in zip(got, direct, strict=True):
        np.testing.assert_array_equal(g, d)
    assert ds.epoch == 1


def test_dataset_is_a_pydataset_with_the_config_prefetch_options(data_store):
    s = make_split(data_store, cfg(test_tiles_fraction=0.2, seed=1))
    training = cfg(workers=3, use_multiprocessing=True, max_queue_size=5, batch_size=4, steps_per_epoch=3)
    ds = PatchDataset(data_store, s, training, member=2)
    assert isinstance(ds, keras.utils.PyDataset) and isinstance(ds, PatchSampler)
    assert (ds.workers, ds.use_multiprocessing, ds.max_queue_size) == (3, True, 5)
    assert ds.num_batches == len(ds) == 3
    plain = PatchSampler(data_store, s, training, member=2)
    for i in range(len(ds)):
        for a, b in zip(ds[i], plain[i], strict=True):
            np.testing.assert_array_equal(a, b)


def test_dataset_pickles_for_process_workers(data_store):
    s = make_split(data_store, cfg(test_tiles_fraction=0.2, seed=1))
    ds = PatchDataset(data_store, s, cfg(seed=4, batch_size=4, steps_per_epoch=2, workers=1))
    x0, y0 = ds[1]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.workers == 1 and clone._store is None  # the store is reopened by path
    x1, y1 = clone[1]
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_array_equal(y0, y1)
