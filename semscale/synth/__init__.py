"""Synthetic SEM + EDS images of Ni/YSZ(/NiO) electrodes, with pixel-exact ground truth.

Every later stage (EDS-guided target labels, U-Net training, blockwise inference, statistics over an
oxidation series) is built and scored on this simulator, so it aims to be realistic *and* learnable:

* **Microstructure** (all lengths in µm, converted with ``pixel_size_um``): an additively weighted Voronoi
  tessellation of hard-core seeds gives faceted grains of ~1.5-4 µm (Ni grains larger than YSZ grains).
  Grains near the boundaries of a coarse (~6 µm) tessellation are YSZ, so the YSZ follows a connected
  network around agglomerates of Ni grains and pores. Pores fill some whole grains (mostly inside the
  agglomerates), open as gaps along part of the Ni|YSZ interfaces (Ni|Ni and YSZ|YSZ boundaries are
  sintered shut), sit at the rounded corners (triple junctions) and appear as sub-µm specks; the pore
  potential is smoothed before thresholding, which rounds the free surfaces while grain-grain facets stay
  straight. Porosity is drawn in [0.30, 0.36] at t = 0.
* **Oxidation**: NiO grows from the pore-exposed Ni surfaces inwards; the oxidised fraction of the Ni is
  ``X(t) = 0.9 (1 - exp(-t / 50 min))`` (0 at 0 min, ~0.82 at 120 min). The Ni → NiO volume expansion
  (×1.7) grows NiO outwards into the adjacent pores, and the NiO is riddled with small internal pores.
  For one seed the microstructure (grains, YSZ, initial pores) is the same at every time and the
  oxidation front only advances with time.
* **SEM image**: per-phase grey levels calibrated to one display-scaled real patch (pore 13±19,
  NiO 96±21, Ni 117±21, YSZ 146±26, mean±std in 8-bit grey levels); per-grain (channelling) contrast,
  fine high-frequency texture in YSZ, smooth Ni, porous NiO, bright rims at pore edges, faint dark YSZ
  grain boundaries, a Gaussian PSF, a brightness drift / depth gradient across large images and
  Poisson-Gaussian noise. Neighbouring phases overlap by about one standard deviation in grey level, so
  texture, shape and context decide (see :func:`realism_table`).
* **EDS maps** (Ni, O, Zr) at ``1 / eds_factor`` of the SEM resolution: element concentrations broadened
  by the interaction volume (Gaussian, σ 0.35-0.45 µm per element), integrated over ``f × f`` SEM pixels
  displaced by a random sub-pixel misregistration, Poisson counts (uint16).

**EDS geometry** (the invariant the labelling stage relies on): with ``f = eds_factor`` and
``(dy, dx) = meta["eds_shift_px"]`` (SEM px), EDS pixel ``(i, j)`` integrates the broadened signal over
SEM rows ``[i*f + dy, (i+1)*f + dy)`` and columns ``[j*f + dx, (j+1)*f + dx)``; an EDS map upsampled
by ``f`` therefore shows at ``(y, x)`` the material at SEM position ``(y + dy, x + dx)``, and
``scipy.ndimage.shift(eds_upsampled, (dy, dx))`` registers it to the SEM. EDS shape is
``(ceil(H/f), ceil(W/f))``.

Everything is deterministic for a given ``seed`` (independent random streams for the microstructure, the
oxidation, the SEM rendering and the EDS, so e.g. ``with_eds`` never changes the SEM image). Every
physical constant lives in :class:`SimParams` (``params=`` of :func:`simulate`).

Modules, each using only those above it:

* ``params``: phase labels, :data:`REAL_PATCH`, :class:`SimParams` (every physical constant);
* ``fields``: Gaussian random fields, bilinear upsampling, distances, quantiles;
* ``microstructure``: seeds, grains, YSZ network, pores (t = 0) and the oxidation into NiO;
* ``render``: the SEM signal (contrast, texture, edges, optics, drift, noise) and the EDS maps;
* ``simulate``: :func:`simulate` and :class:`SynthImage`, :func:`oxidised_fraction`;
* ``realism``: grey-level statistics and Bayes accuracies (:func:`realism_table`, :func:`context_codes`);
* ``campaign``: :func:`write_campaign` (TIFFs + ``campaign.yaml``), :func:`add_to_store`;
* ``demo``: :func:`write_demo_campaign`, the embedded demo of ``semscale demo``.

The package re-exports the public names below; ``semscale.synth.simulate`` is the function (the module
is ``sys.modules["semscale.synth.simulate"]``).
"""

from __future__ import annotations

from semscale.synth.campaign import add_to_store, write_campaign
from semscale.synth.demo import DEMO_TRAINING, write_demo_campaign
from semscale.synth.params import (
    DEFAULT_PARAMS,
    ELEMENTS,
    NI,
    NIO,
    PHASES,
    PORE,
    REAL_PATCH,
    YSZ,
    SimParams,
)
from semscale.synth.realism import context_codes, realism_table
from semscale.synth.simulate import SynthImage, oxidised_fraction, simulate

__all__ = [
    "DEFAULT_PARAMS",
    "DEMO_TRAINING",
    "ELEMENTS",
    "NI",
    "NIO",
    "PHASES",
    "PORE",
    "REAL_PATCH",
    "YSZ",
    "SimParams",
    "SynthImage",
    "add_to_store",
    "context_codes",
    "oxidised_fraction",
    "realism_table",
    "simulate",
    "write_campaign",
    "write_demo_campaign",
]
