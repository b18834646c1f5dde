"""Spectra of weight matrices: Martin & Mahoney's heavy-tailed self-regularisation metrics.

`heavy_tail` computes, per layer, the empirical spectral density (ESD) of $W^\\top W$ and its
metrics: the power-law tail exponent alpha with its $x_{\\min}$ and KS distance (and a bootstrap
interval), the norm metrics, the Marchenko-Pastur fit of the bulk, the randomised ESD and its
correlation traps; `HeavyTail` holds them with the model summary. The parts: `fit_power_law`
(Clauset et al.'s MLE with the KS rule, two rules), `bootstrap_alpha`, `mp_fit`, `PowerLawFit`,
`MPFit`, `BootstrapInterval`, `LayerSpectrum`. ``preset="weightwatcher"`` reproduces
WeightWatcher 0.7.7. See docs/measures/heavy_tail.md.
"""

from ._heavy_tail import heavy_tail as heavy_tail
from ._heavy_tail import heavy_tail_measures as heavy_tail_measures
from ._marchenko_pastur import MPFit as MPFit
from ._marchenko_pastur import mp_fit as mp_fit
from ._powerlaw import BootstrapInterval as BootstrapInterval
from ._powerlaw import PowerLawFit as PowerLawFit
from ._powerlaw import bootstrap_alpha as bootstrap_alpha
from ._powerlaw import fit_power_law as fit_power_law
from ._result import HeavyTail as HeavyTail
from ._result import LayerSpectrum as LayerSpectrum
