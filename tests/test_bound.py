import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genbounds import Bound


def test_bound_dict_and_repr():
    b = Bound(name="toy", value=jnp.asarray(1.25), complexity=3.0, terms={"a": jnp.ones(2)},
              n=10, delta=0.05, estimated=True, reference="X et al. 2020")
    d = b.to_dict()
    assert d["value"] == 1.25 and d["vacuous"] is True and d["terms"]["a"] == [1.0, 1.0]
    json.dumps(d)  # plain Python values only
    assert "toy" in repr(b) and "vacuous" in repr(b) and "estimated" in repr(b)


def test_measure_has_no_value():
    m = Bound(name="path_norm", complexity=2.0)
    assert m.value is None and m.vacuous is None and m.is_measure
    assert m.to_dict()["vacuous"] is None


def test_bound_is_a_pytree():
    b = Bound(name="x", value=0.5, complexity=2.0, terms={"t": 1.0}, n=3, delta=0.1)
    doubled = jax.tree.map(lambda v: v * 2, b)
    assert doubled.value == 1.0 and doubled.terms["t"] == 2.0 and doubled.n == 3
    out = jax.jit(lambda bb: bb)(b)
    np.testing.assert_allclose(out.complexity, 2.0)


@pytest.mark.parametrize("value,vac", [(0.999, False), (1.0, True), (3.0, True)])
def test_vacuous_threshold(value, vac):
    assert Bound(name="b", value=value).vacuous is vac
