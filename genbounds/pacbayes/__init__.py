"""PAC-Bayes: the Bernoulli kl and its inversion, Neyshabur et al.'s margin bound (2018),
Dziugaite & Roy's optimised posterior (2017) and the risk certificates of Pérez-Ortiz et al. (2021).

One diagonal Gaussian, one KL between diagonal Gaussians, one float64 kl inversion and one jitted
posterior-training loop serve every bound here.
"""

from ._dziugaite_roy import DiagonalGaussian as DiagonalGaussian
from ._dziugaite_roy import diag_gaussian_kl as diag_gaussian_kl
from ._dziugaite_roy import dziugaite_roy as dziugaite_roy
from ._dziugaite_roy import dziugaite_roy_certificate as dziugaite_roy_certificate
from ._dziugaite_roy import dziugaite_roy_from_terms as dziugaite_roy_from_terms
from ._dziugaite_roy import sample_convergence_bound as sample_convergence_bound
from ._dziugaite_roy import stochastic_error as stochastic_error
from ._kl import kl_bernoulli as kl_bernoulli
from ._kl import kl_inverse as kl_inverse
from ._kl import mcallester_bound as mcallester_bound
from ._kl import pac_bayes_kl_bound as pac_bayes_kl_bound
from ._neyshabur import pac_bayes as pac_bayes
from ._neyshabur import pac_bayes_margin_bound as pac_bayes_margin_bound
from ._perez_ortiz import DataSplit as DataSplit
from ._perez_ortiz import bounded_cross_entropy as bounded_cross_entropy
from ._perez_ortiz import learn_prior as learn_prior
from ._perez_ortiz import optimal_lambda as optimal_lambda
from ._perez_ortiz import pac_bayes_objective as pac_bayes_objective
from ._perez_ortiz import perez_ortiz as perez_ortiz
from ._perez_ortiz import risk_certificate as risk_certificate
from ._perez_ortiz import risk_certificate_from_terms as risk_certificate_from_terms
from ._perez_ortiz import split_data as split_data
from ._perez_ortiz import train_posterior as train_posterior
