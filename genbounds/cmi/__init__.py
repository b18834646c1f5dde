"""Evaluated conditional-mutual-information (CMI) bounds from populations of training runs.

Owns the supersample experiment (n pairs, K masks, one training run per mask, the runs trained
as one JAX population sharded over devices and processes) and the bounds on the **expected**
generalisation gap of a training algorithm computed from it: f-CMI (Harutyunyan et al. 2021),
e-CMI (Hellström & Durisi 2022), loss-difference CMI and its interpolating form (Wang & Mao
2023), the binary-kl form. Every bound's information term is a plug-in estimate over the K
masks, reported with its bootstrap spread. See docs/cmi.md.
"""

from ._bounds import binary_kl_bound as binary_kl_bound
from ._bounds import cmi_bounds as cmi_bounds
from ._bounds import ecmi_bound as ecmi_bound
from ._bounds import fcmi_bound as fcmi_bound
from ._bounds import interpolating_bound as interpolating_bound
from ._bounds import ldcmi_bound as ldcmi_bound
from ._bounds import zero_one_losses as zero_one_losses
from ._mi import plugin_mi as plugin_mi
from ._mi import plugin_mi_counts as plugin_mi_counts
from ._sharding import population_mesh as population_mesh
from ._sharding import run_population as run_population
from ._supersample import Supersample as Supersample
from ._supersample import SupersampleExperiment as SupersampleExperiment
from ._supersample import draw_masks as draw_masks
from ._supersample import draw_supersample as draw_supersample
from ._supersample import predicted_labels as predicted_labels
from ._supersample import supersample_experiment as supersample_experiment
from ._supersample import train_population as train_population
