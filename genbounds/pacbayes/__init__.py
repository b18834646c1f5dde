"""PAC-Bayes: the Bernoulli kl and its inversion, Neyshabur et al.'s margin bound (2018),
Dziugaite & Roy's optimised posterior (2017) and the risk certificates of Pérez-Ortiz et al. (2021),
with the certificates of the posterior's majority vote (the factor-2 bound, `_first_order.py`, and
Masegosa et al.'s 2020 tandem bound, `_tandem.py`).

One diagonal Gaussian and its KL (`_gaussian.py`), one float64 kl inversion (`_kl.py`), one
Monte-Carlo error of the stochastic net (`_montecarlo.py`) and one jitted posterior-training loop
(`_posterior.py`) serve every bound here; the trained bounds take their hyper-parameters as
option bundles (`Certificate`, `DziugaiteRoyTraining`, `PriorTraining`, `PosteriorTraining`,
`HeldOut`) with the papers' defaults.
"""

from ._dziugaite_roy import dziugaite_roy as dziugaite_roy
from ._dziugaite_roy import dziugaite_roy_certificate as dziugaite_roy_certificate
from ._dziugaite_roy import dziugaite_roy_from_terms as dziugaite_roy_from_terms
from ._first_order import majority_vote_first_order as majority_vote_first_order
from ._gaussian import DiagonalGaussian as DiagonalGaussian
from ._gaussian import diag_gaussian_kl as diag_gaussian_kl
from ._kl import kl_bernoulli as kl_bernoulli
from ._kl import kl_inverse as kl_inverse
from ._kl import mcallester_bound as mcallester_bound
from ._kl import pac_bayes_kl_bound as pac_bayes_kl_bound
from ._montecarlo import majority_vote_error as majority_vote_error
from ._montecarlo import sample_convergence_bound as sample_convergence_bound
from ._montecarlo import stochastic_error as stochastic_error
from ._neyshabur import pac_bayes as pac_bayes
from ._neyshabur import pac_bayes_margin_bound as pac_bayes_margin_bound
from ._objectives import bounded_cross_entropy as bounded_cross_entropy
from ._objectives import optimal_lambda as optimal_lambda
from ._objectives import pac_bayes_objective as pac_bayes_objective
from ._options import Certificate as Certificate
from ._options import DziugaiteRoyTraining as DziugaiteRoyTraining
from ._options import HeldOut as HeldOut
from ._options import PosteriorTraining as PosteriorTraining
from ._options import PriorTraining as PriorTraining
from ._pbb_training import learn_prior as learn_prior
from ._pbb_training import train_posterior as train_posterior
from ._perez_ortiz import perez_ortiz as perez_ortiz
from ._risk_certificate import DataSplit as DataSplit
from ._risk_certificate import risk_certificate as risk_certificate
from ._risk_certificate import risk_certificate_from_terms as risk_certificate_from_terms
from ._risk_certificate import split_data as split_data
from ._tandem import majority_vote_tandem as majority_vote_tandem
