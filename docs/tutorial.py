# %% [markdown]
# # genbounds tutorial: from a trained net to its generalisation bounds
#
# A notebook-style script (cells marked `# %%`; open it in Jupyter with jupytext or VS Code, or
# run it as `python docs/tutorial.py`). The test suite executes it.
#
# We train a small MLP on scikit-learn's digits, look at its spectral complexity, compute every
# bound in one call, and compare them with the test error we measure. Then we do the same with
# random labels (Zhang et al. 2017): the net still fits them, the test error goes to chance, and
# a bound worth the name must rise with it.

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import genbounds
from genbounds.data import load
from genbounds.train import train

QUICK = os.environ.get("GENBOUNDS_TUTORIAL_QUICK") == "1"  # the test suite runs a smaller net
n, width = (300, 64) if QUICK else (None, 256)

# %% [markdown]
# ## Train a net on true labels

# %%
data = load("digits", seed=0, n=n)
net = train({"kind": "mlp", "depth": 2, "width": width}, data, lr=1e-3, batch_size=32,
            max_epochs=600, seed=0)
print(f"epochs to fit: {net.epochs}, train acc {net.train_acc:.3f}, test acc {net.test_acc:.3f}")

# %% [markdown]
# ## Spectral complexity from the parameters alone
#
# `genbounds.spectral(params)` reads the layers in the order the net applies them and returns
# Bartlett, Foster & Telgarsky's spectral complexity $R_A$ (eq. 1.2). The spectral norms are
# certified upper bounds by default.

# %%
sc = genbounds.spectral(net.params)
print(sc)
print(genbounds.spectral_norms(net.params))

# %% [markdown]
# ## Every bound in one call

# %%
rep = genbounds.report(net.params, X=data.X_train, y=data.y_train,
                       apply_fn=net.apply_fn, init_params=net.init_params,
                       X_test=data.X_test, y_test=data.y_test)
print(rep.to_markdown())
assert all(b.value >= rep.test_error for b in rep.bounds)  # a bound never undercuts the truth

# %% [markdown]
# ## Random labels

# %%
noisy = load("digits", seed=0, n=n, corruption="random_labels")
rnet = train({"kind": "mlp", "depth": 2, "width": width}, noisy, lr=1e-3, batch_size=32,
             max_epochs=1500, seed=0)
rrep = genbounds.report(rnet.params, X=noisy.X_train, y=noisy.y_train,
                        apply_fn=rnet.apply_fn, init_params=rnet.init_params,
                        X_test=noisy.X_test, y_test=noisy.y_test)
print(f"random labels: epochs {rnet.epochs}, train error {rrep.train_error:.3f}, "
      f"test error {rrep.test_error:.3f}")
print(rrep.to_text())

# %% [markdown]
# ## Plot: bounds for the two nets

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
rep.plot(axes[0]).set_title("true labels")
rrep.plot(axes[1]).set_title("random labels")
for ax in axes:
    ax.tick_params(axis="x", labelrotation=45)
fig.tight_layout()
fig.savefig(os.environ.get("GENBOUNDS_TUTORIAL_FIG", "tutorial_bounds.png"))
