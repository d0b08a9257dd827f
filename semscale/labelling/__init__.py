"""EDS-guided target labels without a manual step: registration, rules and seeds, features, random forest,
edge snapping, and the store-level stage that resumes block by block.

The paper made its training targets with Ilastik (a random-forest pixel classifier on SEM + EDS, about four
hours of semi-manual work per image). This package does the same automatically and blockwise, in layers
(each imports only those above it):

* :mod:`~semscale.labelling._common` — constants, Gaussian filters with exact halos, block helpers;
* :mod:`~semscale.labelling.rules` — data-driven thresholds (:class:`Split`, :class:`EdsRules`, unmixing);
* :mod:`~semscale.labelling.registration` — EDS-to-SEM shift and sampling of EDS onto the SEM grid;
* :mod:`~semscale.labelling.features` — multiscale SEM + registered EDS features;
* :mod:`~semscale.labelling.seeds` — confident seed pixels from the rules, seed selection, scribble merging;
* :mod:`~semscale.labelling.forest` — the random forest (fit, per-block prediction);
* :mod:`~semscale.labelling.refine` — snapping labels to the SEM's edges (superpixel majority);
* :mod:`~semscale.labelling.steps` — resumable per-block steps in the store's scratch (I/O);
* :mod:`~semscale.labelling.prepare` — per-image work at store level (I/O);
* :mod:`~semscale.labelling.label_store` — the stage: :func:`label_store` (I/O).

Array functions are numpy in → numpy out, dask in → dask out.
"""

from semscale.labelling._common import smooth
from semscale.labelling.features import DEFAULT_SIGMAS, feature_names, feature_stack, sem_features
from semscale.labelling.forest import predict_labels, train_classifier
from semscale.labelling.label_store import label_store
from semscale.labelling.prepare import load_scribbles, register_image
from semscale.labelling.refine import refine_labels, superpixels
from semscale.labelling.registration import (
    Registration,
    block_mean,
    eds_on_sem_grid,
    eds_solid_signal,
    estimate_eds_shift,
    sem_solid_fraction,
    shift_native,
    smooth_eds,
)
from semscale.labelling.rules import EdsRules, Split, eds_quantities, fit_rules, unmix
from semscale.labelling.seeds import (
    BOUNDARY_MIN_FRACTION,
    boundary_seed_candidates,
    seed_candidates,
    select_seeds,
    sem_class_stats,
)

__all__ = [
    "BOUNDARY_MIN_FRACTION",
    "DEFAULT_SIGMAS",
    "EdsRules",
    "Registration",
    "Split",
    "block_mean",
    "boundary_seed_candidates",
    "eds_on_sem_grid",
    "eds_quantities",
    "eds_solid_signal",
    "estimate_eds_shift",
    "feature_names",
    "feature_stack",
    "fit_rules",
    "label_store",
    "load_scribbles",
    "predict_labels",
    "refine_labels",
    "register_image",
    "seed_candidates",
    "select_seeds",
    "sem_class_stats",
    "sem_features",
    "sem_solid_fraction",
    "shift_native",
    "smooth",
    "smooth_eds",
    "superpixels",
    "train_classifier",
    "unmix",
]
