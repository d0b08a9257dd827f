"""U-Net training, in pipeline order: ``splits`` (held-out test tiles) → ``augment`` → ``sampler`` (windows
from the store, keras-free) → ``dataset`` (the sampler as a Keras PyDataset) → ``unet`` (architecture,
save/load, worker cache) → ``monitor`` (per-epoch validation, checkpoints) → ``fit`` (one member,
:func:`~semscale.training.fit.train_member`) → ``ensemble`` (members as Dask tasks,
:func:`~semscale.training.ensemble.train_ensemble`). Every option comes from
:class:`semscale.config.TrainingConfig`; nothing here imports Keras at import time except ``dataset`` and
``monitor``."""
