"""genbounds: generalisation bounds and complexity measures of trained neural networks.

The first tier, here: the bounds (each ``.value`` an upper bound on the 0-1 test error with
probability >= 1 - delta) `vc`, `spectral`, `golowich`, `gonon`, `pac_bayes`, `rademacher_bound`,
`dziugaite_roy`, `perez_ortiz` / `risk_certificate`; all of them at once: `report` (its options
bundled in `ReportOptions`); the result type `Bound`, the network `Network`, the refusal
`NotBoundable`; and the parts the bounds are built from that users reach for first (`spectral_norms`, `spectral_complexity`, `kl_inverse`,
`margins`, `rademacher`, `lipschitz`).

Everything else lives in a sub-namespace that says what it is:

- `genbounds.bounds`: every bound from norms and data (VC, spectral, Golowich, Rademacher,
  stability) with its parts;
- `genbounds.pacbayes`: kl, Neyshabur et al., Dziugaite-Roy, Pérez-Ortiz risk certificates;
- `genbounds.compression`: compression (Occam) bounds on the deterministic quantised network
  (Lotfi et al. 2022): subspace training, quantisation, code length;
- `genbounds.measures`: measures that are not bounds (norms, sharpness, flatness, Hessian,
  evidence, Monte-Carlo Rademacher, Kendall's tau);
- `genbounds.cmi`: evaluated conditional-mutual-information bounds on the expected gap of a
  training algorithm, from populations of runs on a supersample;
- `genbounds.adversarial`: attacks, certified radii, robustness curves;
- `genbounds.verify`: bound propagation (IBP, CROWN, α-CROWN) on the traced network and the
  certified radii it gives;
- `genbounds.spectra`: heavy-tailed self-regularisation metrics of the weight spectra
  (`heavy_tail`, Martin & Mahoney; WeightWatcher's metrics with a compatible preset);
- `genbounds.network`: reading a network (trace or parameters) and its layer norms;
- `genbounds.linalg`: norm kernels; `genbounds.losses`: margins and losses;
- `genbounds.core`: `Bound`, `NotBoundable`, argument checks;
- the harness, apart: `genbounds.data`, `genbounds.train`, `genbounds.experiments` (the
  command line); the bound code never imports them.

Every name of the earlier flat namespace (``genbounds.sharpness``, ``genbounds.pgd``, ...) still
resolves here, to the same object as its sub-namespace name; the sub-namespace is the documented
home. Importing genbounds turns on JAX's persistent compilation cache (opt out with
``GENBOUNDS_JAX_CACHE=0``).
"""


import importlib as _importlib
from typing import Any as _Any

from . import adversarial as adversarial
from . import bounds as bounds
from . import cmi as cmi
from . import compression as compression
from . import core as core
from . import linalg as linalg
from . import losses as losses
from . import measures as measures
from . import network as network
from . import pacbayes as pacbayes
from . import spectra as spectra
from . import verify as verify
from ._report import Report as Report
from ._report import ReportOptions as ReportOptions
from ._report import report as report
from .bounds import golowich as golowich
from .bounds import gonon as gonon
from .bounds import rademacher_bound as rademacher_bound
from .bounds import spectral as spectral
from .bounds import spectral_complexity as spectral_complexity
from .bounds import vc as vc
from .compression import compression_bound as compression_bound
from .core import Bound as Bound
from .core import NotBoundable as NotBoundable
from .losses import margins as margins
from .measures import lipschitz as lipschitz
from .measures import rademacher as rademacher
from .network import Network as Network
from .network import spectral_norms as spectral_norms
from .pacbayes import dziugaite_roy as dziugaite_roy
from .pacbayes import kl_inverse as kl_inverse
from .pacbayes import pac_bayes as pac_bayes
from .pacbayes import perez_ortiz as perez_ortiz
from .pacbayes import risk_certificate as risk_certificate
from .spectra import HeavyTail as HeavyTail
from .spectra import heavy_tail as heavy_tail

__version__ = "0.1.0"

# The earlier flat names, resolved lazily to their sub-namespace (PEP 562): they keep working
# (``from genbounds import pgd``) without crowding ``dir(genbounds)`` and the API page.
_HOMES = {
    "adversarial": (
        "AttackResult", "fgsm", "pgd", "robust_accuracy", "CertifiedRadii", "RobustnessCurve",
        "certified_accuracy", "certified_radius", "robustness",
    ),
    "bounds": (
        "golowich_frobenius", "golowich_l1inf", "golowich_margin_bound",
        "margin_rademacher_bound", "spectral_margin_bound", "SpectralOptions", "empirical_stability",
        "hardt_stability_convex", "hardt_stability_nonconvex", "vc_dimension_bound",
    ),
    "linalg": (
        "conv_operator_norm", "reshaped_kernel_norm", "hessian_vector_product", "NormResult",
        "frobenius_norm", "log_norm_product", "norm_21", "spectral_norm", "NormMethod",
    ),
    "losses": ("SelectedMargin", "margin_loss", "margin_quantile", "ramp_loss", "select_margin"),
    "measures": (
        "laplace_evidence", "hessian_top_eigenvalues", "hessian_trace",
        "magnitude_aware_flatness", "magnitude_aware_sharpness", "pac_bayes_flatness",
        "sharpness", "worst_case_sharpness", "HypothesisClass", "KernelBall", "LinearBall",
        "NetworkClass", "GranulatedKendall", "granulated_kendall", "kendall_tau",
        "distance_from_init", "jiang_normalise", "norm_measures", "path_norm",
        "RademacherEstimate", "rademacher_signs",
    ),
    "network": ("ConvSpec", "Layer", "augment_biases", "read_layers", "SpectralNorms"),
    "pacbayes": (
        "DiagonalGaussian", "diag_gaussian_kl", "dziugaite_roy_certificate",
        "dziugaite_roy_from_terms", "sample_convergence_bound", "stochastic_error",
        "kl_bernoulli", "mcallester_bound", "pac_bayes_kl_bound", "pac_bayes_margin_bound",
        "DataSplit", "bounded_cross_entropy", "learn_prior", "optimal_lambda",
        "pac_bayes_objective", "risk_certificate_from_terms", "split_data", "train_posterior",
    ),
}
_ALIASES = {name: pkg for pkg, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> _Any:
    pkg = _ALIASES.get(name)
    if pkg is None:
        raise AttributeError(f"module 'genbounds' has no attribute {name!r}")
    return getattr(_importlib.import_module(f"genbounds.{pkg}"), name)


# JAX's persistent compilation cache in ~/.cache/genbounds/jax unless the user set one or opted
# out with GENBOUNDS_JAX_CACHE=0 (docs/benchmarks.md).
from .core._jax_cache import enable_persistent_cache as _enable_persistent_cache  # noqa: E402

_enable_persistent_cache()
