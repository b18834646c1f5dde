"""`Report.to_pandas` beside `to_records`, and the plot's names and vacuous line."""

from __future__ import annotations

import numpy as np
import pytest

import genbounds


@pytest.fixture(scope="module")
def rep():
    params = {"Dense_0": {"kernel": np.eye(2)}, "Dense_1": {"kernel": 2.0 * np.eye(2)}}
    X = np.array([[1.0, 0.0], [0.0, 1.0]] * 50)
    y = np.array([0, 1] * 50)
    return genbounds.report(params, X=X, y=y,
                            apply_fn=lambda p, x: x @ p["Dense_0"]["kernel"] @ p["Dense_1"]["kernel"],
                            X_test=X[:10], y_test=1 - y[:10])


def test_to_pandas_holds_the_records(rep):
    pd = pytest.importorskip("pandas")
    df = rep.to_pandas()
    records = rep.to_records()
    assert isinstance(df, pd.DataFrame) and len(df) == len(records)
    assert list(df.columns[:9]) == ["name", "kind", "value", "complexity", "vacuous",
                                    "estimated", "n", "delta", "seconds"]
    assert df["name"].tolist() == [r["name"] for r in records]
    bounds = df[df["kind"] == "bound"]
    assert bounds["name"].tolist() == [b.name for b in rep.ranked()]
    np.testing.assert_array_equal(bounds["value"].to_numpy(float),
                                  [float(b.value) for b in rep.ranked()])
    assert (bounds["vacuous"] == (bounds["value"] >= 1.0)).all()
    assert df.loc[df["kind"] == "measure", "value"].isna().all()


def test_plot_names_and_vacuous_line(rep):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = rep.plot()
    try:
        bars = [t.get_text() for t in ax.get_xticklabels()]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(ax.figure)
    assert bars == [b.name for b in rep.ranked()]  # the table's names, in its order
    assert "vacuous (1)" in legend and "test error" in legend
