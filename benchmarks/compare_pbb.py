"""genbounds' `perez_ortiz` side by side with the authors' code (mperezortiz/PBB) on digits.

    python benchmarks/compare_pbb.py --pbb PATH [--seeds 0 1 2] [--num-mc 1000]
    python benchmarks/compare_pbb.py --pbb PATH --formulas-only

``PATH`` is a checkout of https://github.com/mperezortiz/PBB (Pérez-Ortiz, Rivasplata,
Shawe-Taylor & Szepesvári, *Tighter risk certificates for neural networks*, JMLR 22(227),
2021), e.g. ``git clone https://github.com/mperezortiz/PBB`` (the numbers in
docs/bounds/risk_certificates.md were measured at its commit 466a345, 9 July 2021). Nothing of
it is copied here: its modules ``pbb.bounds``, ``pbb.models`` and ``pbb.data`` are imported
from ``PATH``. It needs torch (CPU is enough) and tqdm beside genbounds; ``pbb.models`` and
``pbb.data`` import torchvision at module level but this protocol uses none of it, so when
torchvision is absent a stub module stands in for the import (any use of it raises).

**The protocol** (one seed = one run of each code, paired):

* data: sklearn's digits as ``genbounds.data.load("digits", seed=0)`` splits it (1437 training,
  360 test examples, pixels in [0, 1]); the training set is permuted by the seed;
* the authors' data code, ``pbb.data.loadbatches(..., prior=True, perc_prior=0.5)``, splits it
  into the prior half (718) and the bound set (719), on torch ``Dataset`` adapters over the
  digits arrays (it expects torchvision's MNIST/CIFAR objects: ``.data``, ``.classes``,
  indexing); genbounds gets the training set arranged so that its own ``split_data`` (seed 0)
  yields exactly the same prior and bound sets (checked);
* the same MLP 64-100-100-10 starting from the same initial weights (Flax's, copied into the
  authors' ``Linear``/``ProbLinear`` layers): the authors' nets are ``NNet4l``/``ProbNNet4l``
  with the widths changed (the same layer classes, forward passes and ``output_transform``);
* prior: ERM (SGD with momentum, cross-entropy) on the prior half for a fixed number of epochs
  (``pbb.models.trainNNet``; genbounds' ``PriorTraining`` with ``holdout=0``), no dropout;
* posterior: f_quad from the prior, sigma_P = 0.03, p_min = 1e-5, on the whole training set
  (``trainPNNet`` from ``runexp``'s loaders; genbounds' ``posterior_data="all"``);
* certificate: delta = 0.025, delta' = 0.01, N Monte-Carlo networks each on the whole bound set
  (``computeRiskCertificates`` with one batch, as ``runexp`` for a fully connected net);
  ``PBBobj`` gets ``n_posterior`` and ``n_bound`` exactly as ``runexp`` computes them:
  ``len(train_loader.dataset)`` and ``len(val_bound.dataset)``;
* test: stochastic test error (the authors' ``testStochastic``, one network per test example;
  genbounds' ``HeldOut`` Monte Carlo) and the posterior mean's and the prior net's test errors.

Minibatches of 40 in both codes (``testStochastic`` keeps a buffer of one batch's rows, so the
360 test examples must be a multiple of the batch size); the authors' loaders keep the last
partial batch, genbounds' epochs drop it.

Printed: per seed and mean +- sd the numbers of both codes, the authors' certificate recomputed
from its own Monte-Carlo error and KL with genbounds' conventions (delta in the PAC-Bayes step,
n = the bound set), the ratio genbounds / authors, and whether the means agree within the seed
spread (|difference of means| <= 2 standard errors of that difference). Then the formulas fed the
same numbers (the ``--formulas-only`` part, no training): the authors' ``inv_kl`` against
genbounds' ``kl_inverse``, and the authors' ``PBBobj.compute_final_stats_risk`` (Monte Carlo
replaced by given numbers) against genbounds' composition, with each difference traced to its
cause. The machine load average is printed first; the machine is shared, so times compare
within one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")  # the authors' loops wrap every loader in tqdm


# ----------------------------------------------------------------------------------------------
# Importing the authors' code.
# ----------------------------------------------------------------------------------------------


def _stub_torchvision() -> None:
    """A stand-in for torchvision: ``pbb.models``/``pbb.data`` import it but this protocol
    uses none of it (MNIST/CIFAR loading, image grids); any use raises."""

    def unused(*_a, **_k):
        raise RuntimeError("torchvision is not installed; compare_pbb.py does not use it")

    def attribute(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return unused

    tv = types.ModuleType("torchvision")
    for sub in ("datasets", "transforms", "utils"):
        mod = types.ModuleType(f"torchvision.{sub}")
        mod.__getattr__ = attribute  # type: ignore[attr-defined]
        setattr(tv, sub, mod)
        sys.modules[f"torchvision.{sub}"] = mod
    sys.modules["torchvision"] = tv


def import_pbb(path: str) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType, str]:
    """``pbb.bounds``, ``pbb.models``, ``pbb.data`` from the checkout at `path`, and its commit."""
    p = Path(path).resolve()
    if not (p / "pbb" / "bounds.py").is_file():
        raise SystemExit(f"--pbb: expected a checkout of mperezortiz/PBB (pbb/bounds.py) at {p}")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        _stub_torchvision()
    sys.path.insert(0, str(p))
    import pbb.bounds as pb
    import pbb.data as pd
    import pbb.models as pm

    try:
        commit = subprocess.run(["git", "-C", str(p), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    return pb, pm, pd, commit


# ----------------------------------------------------------------------------------------------
# Adapters: the digits arrays as the torch datasets the authors' loaders expect, and the
# authors' 4-layer nets with the digits widths.
# ----------------------------------------------------------------------------------------------


def make_adapters(pm):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    class ArrayDataset(torch.utils.data.Dataset):
        """What ``pbb.data.loadbatches`` and ``runexp`` read of a torchvision dataset:
        ``len(.data)``, ``.classes`` and ``(x, label)`` items."""

        def __init__(self, X, y, num_classes):
            self.data = torch.as_tensor(np.asarray(X, np.float32))
            self.targets = torch.as_tensor(np.asarray(y, np.int64))
            self.classes = [str(c) for c in range(num_classes)]

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            return self.data[i], self.targets[i]

    class NNet(tnn.Module):
        """``pbb.models.NNet4l`` with the widths of `widths` (its ``Linear`` layers, dropout
        after each hidden layer, ``output_transform`` without clamping)."""

        def __init__(self, widths, dropout_prob=0.0, device="cpu"):
            super().__init__()
            self.widths = widths
            self.layers = tnn.ModuleList([pm.Linear(a, b, device)
                                          for a, b in zip(widths[:-1], widths[1:], strict=True)])
            self.d = tnn.Dropout(dropout_prob)

        def forward(self, x):
            x = x.view(-1, self.widths[0])
            for layer in self.layers[:-1]:
                x = F.relu(self.d(layer(x)))
            return pm.output_transform(self.layers[-1](x), clamping=False)

    class ProbNNet(tnn.Module):
        """``pbb.models.ProbNNet4l`` with the widths of `init_net` (its ``ProbLinear`` layers,
        prior and posterior means at `init_net`'s weights, ``output_transform``)."""

        def __init__(self, rho_prior, init_net, device="cpu"):
            super().__init__()
            self.widths = init_net.widths
            self.layers = tnn.ModuleList([
                pm.ProbLinear(a, b, rho_prior, prior_dist="gaussian", device=device,
                              init_layer=lin)
                for a, b, lin in zip(self.widths[:-1], self.widths[1:], init_net.layers,
                                     strict=True)])

        def forward(self, x, sample=False, clamping=True, pmin=1e-4):
            x = x.view(-1, self.widths[0])
            for layer in self.layers[:-1]:
                x = F.relu(layer(x, sample))
            return pm.output_transform(self.layers[-1](x, sample), clamping, pmin)

        def compute_kl(self):
            return sum(layer.kl_div for layer in self.layers)

        def kl_now(self):
            """KL(Q||P) at the current parameters, with the authors' ``Gaussian.compute_kl``
            (``compute_kl`` returns the value stored by the last forward pass in training
            mode, i.e. before the last SGD step)."""
            with torch.no_grad():
                return float(sum(layer.weight.compute_kl(layer.weight_prior)
                                 + layer.bias.compute_kl(layer.bias_prior)
                                 for layer in self.layers))

    return ArrayDataset, NNet, ProbNNet


def recording_pbbobj(pb):
    class RecordingPBBobj(pb.PBBobj):
        """``PBBobj`` unchanged, remembering the Monte-Carlo errors its ``mcsampling`` returns
        (``compute_final_stats_risk`` only returns them after the sample-convergence step)."""

        def mcsampling(self, *args, **kwargs):
            ce, err = super().mcsampling(*args, **kwargs)
            self.last_mc = (float(ce), float(err))
            return ce, err

    return RecordingPBBobj


# ----------------------------------------------------------------------------------------------
# One seed of each code.
# ----------------------------------------------------------------------------------------------


def _rows(X, y):
    """The rows of (X, y) in a canonical order (to compare sets of examples)."""
    Z = np.column_stack([np.asarray(X, np.float64), np.asarray(y, np.float64)])
    return Z[np.lexsort(Z.T[::-1])]


def run_pbb(mods, seed, Xs, ys, Xt, yt, p0, cfg):
    """The authors' protocol (``pbb.utils.runexp`` for a learnt prior and a fully connected
    net), step by step with their functions, on the digits adapters."""
    import torch
    import torch.optim as optim

    pb, pm, pd = mods["bounds"], mods["models"], mods["data"]
    ArrayDataset, NNet, ProbNNet = mods["adapters"]
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # runexp: torch.manual_seed(7); varied here with the seed
    np.random.seed(0)
    train, test = ArrayDataset(Xs, ys, 10), ArrayDataset(Xt, yt, 10)
    rho_prior = math.log(math.exp(cfg.sigma_prior) - 1.0)
    (train_loader, test_loader, prior_loader, val_bound_one_batch, _,
     val_bound) = pd.loadbatches(train, test, {}, cfg.batch_size, prior=True, perc_train=1.0,
                                 perc_prior=cfg.prior_fraction)
    net0 = NNet(cfg.widths, dropout_prob=0.0)
    with torch.no_grad():  # the initial weights of genbounds' run
        for layer, name in zip(net0.layers, sorted(p0["params"]), strict=True):
            layer.weight.copy_(torch.as_tensor(np.array(p0["params"][name]["kernel"]).T))
            layer.bias.copy_(torch.as_tensor(np.array(p0["params"][name]["bias"])))
    opt = optim.SGD(net0.parameters(), lr=cfg.prior_lr, momentum=cfg.prior_momentum)
    with contextlib.redirect_stdout(io.StringIO()):
        for epoch in range(cfg.prior_epochs):
            pm.trainNNet(net0, opt, epoch, prior_loader, device="cpu")
        prior_test_err = pm.testNNet(net0, test_loader, device="cpu")
    # runexp's n: the sizes of the loaders' datasets
    posterior_n_size = len(train_loader.dataset)
    bound_n_size = len(val_bound.dataset)
    if cfg.pbb_n_posterior == "bound":  # the objective's n as genbounds sets it
        posterior_n_size = len(val_bound_one_batch.sampler.indices)
    net = ProbNNet(rho_prior, init_net=net0)
    bound = mods["Recording"](cfg.objective_pbb, cfg.pmin, 10, cfg.delta, cfg.delta_prime,
                              cfg.num_mc, 1, "cpu", n_posterior=posterior_n_size,
                              n_bound=bound_n_size)
    opt = optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    for epoch in range(cfg.epochs):
        pm.trainPNNet(net, opt, bound, epoch, train_loader, None, None, False)
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    train_obj, risk_ce, risk_01, kl_over_n, loss_ce_train, err_01_upper = (
        pm.computeRiskCertificates(net, False, bound, device="cpu", train_loader=val_bound,
                                   whole_train=val_bound_one_batch))
    t_cert = time.perf_counter() - t1
    _, stch_err = pm.testStochastic(net, test_loader, bound, device="cpu")
    _, post_err = pm.testPosteriorMean(net, test_loader, bound, device="cpu")
    prior_idx = np.asarray(prior_loader.sampler.indices)
    bound_idx = np.asarray(val_bound_one_batch.sampler.indices)
    Xb = torch.as_tensor(Xs[bound_idx])
    net0.eval()
    with torch.no_grad():
        prior_bound_err = float((net0(Xb).argmax(1).numpy() != ys[bound_idx]).mean())
    kl_used = kl_over_n * bound_n_size
    n_b = len(bound_idx)
    # the same certificate with genbounds' conventions, the authors' inv_kl
    recomputed = pb.inv_kl(err_01_upper, (kl_used + math.log(2 * math.sqrt(n_b) / cfg.delta))
                           / n_b)
    return {
        "prior_idx": prior_idx, "bound_idx": bound_idx,
        "n_posterior": posterior_n_size, "n_bound_used": bound_n_size, "n_bound_set": n_b,
        "prior_bound_err": prior_bound_err, "prior_test_err": float(prior_test_err),
        "mc_err": bound.last_mc[1], "mc_err_upper": float(err_01_upper),
        "kl": float(kl_used), "kl_final": net.kl_now(),
        "cert": float(risk_01), "cert_ce": float(risk_ce), "cert_recomputed": float(recomputed),
        "stoch_test_err": float(stch_err), "mean_test_err": float(post_err),
        "seconds": time.perf_counter() - t0, "seconds_train": t_train,
        "seconds_cert": t_cert, "n_objective": posterior_n_size,
        "net0": net0, "bound_loader": val_bound, "pbbobj": bound,
    }


def run_genbounds(seed, Xs, ys, Xt, yt, p0, model, pbb_run, cfg):
    """genbounds' `perez_ortiz` on the same prior/bound split, initialisation and settings."""
    import jax

    from genbounds.pacbayes import (
        Certificate,
        HeldOut,
        PosteriorTraining,
        PriorTraining,
        perez_ortiz,
        split_data,
    )

    m = len(Xs)
    pi, bi = pbb_run["prior_idx"], pbb_run["bound_idx"]
    perm = np.random.default_rng(0).permutation(m)  # split_data(seed=0)'s permutation
    n_prior = int(round(cfg.prior_fraction * m))
    if n_prior != len(pi):
        raise RuntimeError(f"prior-set sizes differ: genbounds {n_prior}, PBB {len(pi)}")
    order = np.empty(m, dtype=np.int64)
    order[perm[:n_prior]], order[perm[n_prior:]] = pi, bi
    Xg, yg = Xs[order], ys[order]
    s = split_data(Xg, yg, prior_fraction=cfg.prior_fraction, seed=0)
    assert np.array_equal(_rows(s.X_prior, s.y_prior), _rows(Xs[pi], ys[pi]))
    assert np.array_equal(_rows(s.X_bound, s.y_bound), _rows(Xs[bi], ys[bi]))
    t0 = time.perf_counter()
    b, _ = perez_ortiz(
        p0, X=Xg, y=yg, apply_fn=model.apply, key=jax.random.key(10_000 + seed),
        delta=cfg.delta, prior_stds=(cfg.sigma_prior,), posterior_data="all",
        prior=PriorTraining(fraction=cfg.prior_fraction, split_seed=0, epochs=cfg.prior_epochs,
                            lr=cfg.prior_lr, momentum=cfg.prior_momentum,
                            batch_size=cfg.batch_size, p_min=cfg.pmin, holdout=0.0),
        posterior=PosteriorTraining(objective="quad", epochs=cfg.epochs, lr=cfg.lr,
                                    momentum=cfg.momentum, batch_size=cfg.batch_size,
                                    p_min=cfg.pmin),
        certificate=Certificate(num_mc_samples=cfg.num_mc, delta_prime=cfg.delta_prime),
        test=HeldOut(Xt, yt, num_mc_samples=cfg.test_mc),
    )
    t = b.terms
    return {
        "n_bound_used": b.n, "prior_bound_err": t["prior_net_bound_set_error"],
        "prior_test_err": t["prior_net_test_error"], "mc_err": t["bound_set_error_mc"],
        "mc_err_upper": t["bound_set_error_upper"], "kl": t["kl"], "cert": b.value,
        "stoch_test_err": t["stochastic_test_error"], "mean_test_err": t["mean_net_test_error"],
        "seconds": time.perf_counter() - t0, "seconds_train": t["seconds_prior"]
        + t["seconds_posterior"], "seconds_cert": t["seconds_certificate"],
    }


# ----------------------------------------------------------------------------------------------
# The formulas, fed the same numbers.
# ----------------------------------------------------------------------------------------------


def certificate_pbb(pb, *, error, kl, n_bound, num_mc, delta, delta_prime, n_posterior=None):
    """The authors' ``PBBobj.compute_final_stats_risk`` with its Monte Carlo replaced by the
    given 0-1 error (``mcsampling`` aside); returns their (risk_01, empirical_risk_01)."""
    import torch

    class Given(pb.PBBobj):
        def mcsampling(self, *args, **kwargs):
            return torch.tensor(0.5, dtype=torch.float64), error

    class KLOnly:
        def compute_kl(self):
            return torch.tensor(kl, dtype=torch.float64)

    obj = Given("fquad", 1e-5, 10, delta, delta_prime, num_mc, 1, "cpu",
                n_posterior=n_posterior or n_bound, n_bound=n_bound)
    out = obj.compute_final_stats_risk(KLOnly(), input=None, target=None)
    return float(out[5]), float(out[3])


def certificate_genbounds(*, error, kl, n, num_mc, delta, delta_prime):
    from genbounds.pacbayes import risk_certificate_from_terms, sample_convergence_bound

    e_up = sample_convergence_bound(error, num_samples=num_mc, delta_prime=delta_prime)
    return risk_certificate_from_terms(kl=kl, error=e_up, n=n, delta=delta), e_up


def compare_formulas(pb, runs, cfg) -> None:
    import jax

    from genbounds.pacbayes import kl_inverse

    print("\n== formulas fed the same numbers ==")
    qs = [0.0, 1e-4, 0.01, 0.0296, 0.05, 0.1, 0.3, 0.5, 0.9, 0.999]
    cs = [1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0]
    worst = 0.0
    with jax.enable_x64(True):
        for q in qs:
            for c in cs:
                a, g = pb.inv_kl(q, c), float(kl_inverse(q, c))
                worst = max(worst, abs(a - g) / g)
    print(f"kl inversion, {len(qs) * len(cs)} (q, c) pairs, q in [0, 0.999], c in [1e-5, 3]: "
          f"max |inv_kl - kl_inverse| / kl_inverse = {worst:.2e} (inv_kl bisects to a relative "
          "bracket of 1e-5 and returns its midpoint; kl_inverse to float64 and returns the "
          "upper end)")
    with jax.enable_x64(True):
        print(f"edge q = 1: inv_kl(1, 0.1) = {pb.inv_kl(1.0, 0.1)!r} (its loop never runs), "
              f"kl_inverse(1, 0.1) = {float(kl_inverse(1.0, 0.1))!r}")

    cases = [("docs example: e_N 0.0296, KL 0.05, n 719, N 10000", 0.0296, 0.05, 719, 1437,
              10_000)]
    for r in runs:
        cases.append((f"seed {r['seed']} PBB run: e_N {r['pbb']['mc_err']:.4f}, KL "
                      f"{r['pbb']['kl']:.4f}, n {r['pbb']['n_bound_set']}, N {cfg.num_mc}",
                      r["pbb"]["mc_err"], r["pbb"]["kl"], r["pbb"]["n_bound_set"],
                      r["pbb"]["n_bound_used"], cfg.num_mc))
    d, dp = cfg.delta, cfg.delta_prime
    print(f"\ncertificate composition (delta = {d}, delta' = {dp}); columns: the authors' "
          "compute_final_stats_risk with n_bound = n; genbounds at delta = delta' (the "
          "authors' choice); genbounds as it runs (delta); the authors' inv_kl with delta in "
          "the PAC-Bayes step; the authors' code with runexp's n_bound = m; genbounds (delta) "
          "with n = m")
    cols = ("PBB", "g(d')", "rel", "g(d)", "inv(d)", "rel", "PBB(m)", "g(d, m)")
    print(f"{'case':<58}" + "".join(f" {c:>8}" for c in cols) + f" {'PBB(m)/PBB':>10}")
    worst_same, worst_delta = 0.0, 0.0
    for name, e, kl, n, m, N in cases:
        a, a_up = certificate_pbb(pb, error=e, kl=kl, n_bound=n, num_mc=N, delta=d,
                                  delta_prime=dp)
        g_dp, g_up = certificate_genbounds(error=e, kl=kl, n=n, num_mc=N, delta=dp,
                                           delta_prime=dp)
        g_d, _ = certificate_genbounds(error=e, kl=kl, n=n, num_mc=N, delta=d, delta_prime=dp)
        a_d = pb.inv_kl(a_up, (kl + math.log(2 * math.sqrt(n) / d)) / n)
        a_m, _ = certificate_pbb(pb, error=e, kl=kl, n_bound=m, num_mc=N, delta=d,
                                 delta_prime=dp)
        g_m, _ = certificate_genbounds(error=e, kl=kl, n=m, num_mc=N, delta=d, delta_prime=dp)
        r_same, r_delta = abs(a - g_dp) / g_dp, abs(a_d - g_d) / g_d
        worst_same, worst_delta = max(worst_same, r_same, abs(a_up - g_up) / g_up), max(
            worst_delta, r_delta)
        print(f"{name:<58} {a:8.5f} {g_dp:8.5f} {r_same:8.1e} {g_d:8.5f} {a_d:8.5f} "
              f"{r_delta:8.1e} {a_m:8.5f} {g_m:8.5f} {a_m / a:10.3f}")
    print(f"max relative difference, same delta (0.01) in both codes: {worst_same:.1e}; "
          f"genbounds' certificate against the authors' arithmetic with delta = {d} in the "
          f"PAC-Bayes step: {worst_delta:.1e}. The authors' certificate is larger by exactly "
          f"ln(2 sqrt(n)/{dp}) - ln(2 sqrt(n)/{d}) = ln({d / dp:g}) = {math.log(d / dp):.4f} "
          "nats in the numerator of the kl right-hand side.")


def check_batched_mcsampling(pb, pm, run, cfg) -> None:
    """The authors' batched Monte Carlo (``runexp``'s path for CNNs, ``toolarge=True``) on a
    deterministic net (the prior net): exact error against what ``mcsampling`` returns."""
    import torch

    net0, loader = run["net0"], run["bound_loader"]

    class Deterministic:
        def __call__(self, data, sample=True, clamping=True, pmin=1e-4):
            with torch.no_grad():
                return pm.output_transform(net0.layers[-1](_hidden(data)), clamping, pmin)

    def _hidden(x):
        x = x.view(-1, net0.widths[0])
        for layer in net0.layers[:-1]:
            x = torch.relu(layer(x))
        return x

    net0.eval()
    obj = pb.PBBobj("fquad", cfg.pmin, 10, cfg.delta, cfg.delta_prime, 2, 1, "cpu")
    _, err_batched = obj.mcsampling(Deterministic(), None, None, batches=True, data_loader=loader)
    wrong, total, batches = 0, 0, 0
    for xb, yb in loader:
        wrong += int((Deterministic()(xb).argmax(1) != yb).sum())
        total, batches = total + len(yb), batches + 1
    print(f"\nbatched mcsampling (the authors' path for CNNs) on a deterministic net, {batches} "
          f"batches of {cfg.batch_size}: returns {err_batched:.5f}; exact error {wrong / total:.5f}"
          f"; ratio {err_batched / (wrong / total):.4f} (it divides the sum of the per-batch "
          f"means by the last batch index, {batches - 1}, not by {batches})")


# ----------------------------------------------------------------------------------------------
# The table.
# ----------------------------------------------------------------------------------------------

ROWS = [
    ("prior net, bound-set error", "prior_bound_err"),
    ("prior net, test error", "prior_test_err"),
    ("posterior, bound-set MC error e_N", "mc_err"),
    ("  its upper bound (delta')", "mc_err_upper"),
    ("KL(Q||P) in the certificate", "kl"),
    ("n in the certificate", "n_bound_used"),
    ("stochastic test error", "stoch_test_err"),
    ("posterior-mean test error", "mean_test_err"),
    ("risk_01 certificate", "cert"),
    ("seconds (whole run)", "seconds"),
]
PBB_ONLY = [
    ("PBB: KL at the final parameters", "kl_final"),
    ("PBB: risk_01 recomputed (delta, n_B)", "cert_recomputed"),
    ("PBB: cross-entropy certificate risk_ce", "cert_ce"),
]


def _ms(v):
    v = np.asarray(v, np.float64)
    return v.mean(), (v.std(ddof=1) if len(v) > 1 else float("nan"))


def print_table(runs) -> None:
    seeds = [r["seed"] for r in runs]
    head = f"{'quantity':<40} {'code':<9}" + "".join(f"{'seed ' + str(s):>10}" for s in seeds)
    print("\n" + head + f"{'mean':>10}{'sd':>9}")
    for label, k in ROWS:
        for code in ("pbb", "genbounds"):
            vals = [r[code][k] for r in runs]
            mu, sd = _ms(vals)
            fmt = (lambda v: f"{v:10.0f}") if k == "n_bound_used" else (lambda v: f"{v:10.4f}")
            print(f"{label if code == 'pbb' else '':<40} {code:<9}" + "".join(fmt(v) for v in vals)
                  + f"{mu:10.4f}{sd:9.4f}")
    for label, k in PBB_ONLY:
        vals = [r["pbb"][k] for r in runs]
        mu, sd = _ms(vals)
        print(f"{label:<40} {'pbb':<9}" + "".join(f"{v:10.4f}" for v in vals)
              + f"{mu:10.4f}{sd:9.4f}")
    k_runs = len(runs)
    print("\nagreement of the means (|difference| <= 2 standard errors of the difference); "
          "paired: the per-seed differences (same split and initial weights), their mean and 2 "
          "standard errors:")
    pairs = [("stochastic test error", "stoch_test_err", "stoch_test_err"),
             ("bound-set MC error", "mc_err", "mc_err"),
             ("prior net test error", "prior_test_err", "prior_test_err"),
             ("certificate: genbounds vs PBB as run", "cert", "cert"),
             ("certificate: genbounds vs PBB recomputed (delta, n_B)", "cert", "cert_recomputed")]
    for label, kg, kp in pairs:
        g = [r["genbounds"][kg] for r in runs]
        p = [r["pbb"][kp] for r in runs]
        (mg, sg), (mp, sp) = _ms(g), _ms(p)
        se = math.sqrt((sg**2 + sp**2) / k_runs) if k_runs > 1 else float("nan")
        ok = abs(mg - mp) <= 2 * se
        dm, ds = _ms(np.subtract(g, p))
        print(f"  {label:<55} genbounds {mg:.4f}, PBB {mp:.4f}, ratio {mg / mp:.3f}, "
              f"difference {mg - mp:+.4f}, 2 SE {2 * se:.4f}: "
              f"{'within' if ok else 'OUTSIDE'} the seed spread; paired {dm:+.4f} +- "
              f"{2 * ds / math.sqrt(k_runs):.4f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pbb", required=True, help="path to a checkout of mperezortiz/PBB")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--num-mc", type=int, default=1000, help="N networks for the certificate")
    ap.add_argument("--test-mc", type=int, default=200, help="genbounds' test networks")
    ap.add_argument("--prior-epochs", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=50, help="posterior epochs")
    ap.add_argument("--batch-size", type=int, default=40)
    ap.add_argument("--prior-lr", type=float, default=0.05)
    ap.add_argument("--prior-momentum", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--momentum", type=float, default=0.95)
    ap.add_argument("--sigma-prior", type=float, default=0.03)
    ap.add_argument("--pmin", type=float, default=1e-5)
    ap.add_argument("--pbb-n-posterior", choices=("runexp", "bound"), default="runexp",
                    help="n in the authors' training objective: runexp's len(train_loader."
                    "dataset) (the whole training set) or the bound-set size (genbounds')")
    ap.add_argument("--formulas-only", action="store_true", help="no training")
    cfg = ap.parse_args(argv)
    cfg.delta, cfg.delta_prime, cfg.prior_fraction = 0.025, 0.01, 0.5
    cfg.widths, cfg.objective_pbb = (64, 100, 100, 10), "fquad"
    if 360 % cfg.batch_size:
        raise SystemExit("--batch-size must divide the 360 test examples (the authors' "
                         "testStochastic keeps a buffer of batch_size rows)")

    import jax
    import torch

    import genbounds
    from genbounds.data import load
    from genbounds.train import MLP

    torch.set_num_threads(1)
    pb, pm, pd, commit = import_pbb(cfg.pbb)
    genbounds_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                   capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} on {os.cpu_count()} CPUs; PBB {commit}; genbounds "
          f"{genbounds_rev} ({genbounds.__file__}); torch {torch.__version__}, jax "
          f"{jax.__version__}")
    print(f"settings: seeds {cfg.seeds}, N = {cfg.num_mc}, prior {cfg.prior_epochs} epochs "
          f"(lr {cfg.prior_lr}, momentum {cfg.prior_momentum}), posterior f_quad "
          f"{cfg.epochs} epochs (lr {cfg.lr}, momentum {cfg.momentum}), batch {cfg.batch_size}, "
          f"sigma_P {cfg.sigma_prior}, p_min {cfg.pmin}, delta {cfg.delta}, delta' "
          f"{cfg.delta_prime}, MLP {'-'.join(map(str, cfg.widths))}, n in PBB's objective: "
          f"{cfg.pbb_n_posterior}")
    mods = {"bounds": pb, "models": pm, "data": pd, "adapters": make_adapters(pm),
            "Recording": recording_pbbobj(pb)}
    ds = load("digits", seed=0)
    X, y = np.asarray(ds.X_train, np.float32), np.asarray(ds.y_train, np.int64)
    Xt, yt = np.asarray(ds.X_test, np.float32), np.asarray(ds.y_test, np.int64)
    model = MLP(features=cfg.widths[1:-1], num_classes=cfg.widths[-1])
    runs = []
    if not cfg.formulas_only:
        for seed in cfg.seeds:
            perm = np.random.default_rng(seed).permutation(len(X))
            Xs, ys = X[perm], y[perm]
            p0 = model.init(jax.random.key(seed), Xs[:1])
            r_p = run_pbb(mods, seed, Xs, ys, Xt, yt, p0, cfg)
            r_g = run_genbounds(seed, Xs, ys, Xt, yt, p0, model, r_p, cfg)
            runs.append({"seed": seed, "pbb": r_p, "genbounds": r_g})
            print(f"seed {seed}: PBB certificate {r_p['cert']:.4f} ({r_p['seconds']:.0f} s), "
                  f"genbounds {r_g['cert']:.4f} ({r_g['seconds']:.0f} s)", flush=True)
        print_table(runs)
        tp = sum(r["pbb"]["seconds"] for r in runs)
        tg = sum(r["genbounds"]["seconds"] for r in runs)
        print(f"\ntime, all seeds: PBB {tp:.0f} s, genbounds {tg:.0f} s (ratio genbounds / PBB "
              f"{tg / tp:.2f}; genbounds' includes its compilations)")
        check_batched_mcsampling(pb, pm, runs[0]["pbb"], cfg)
    compare_formulas(pb, runs, cfg)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
