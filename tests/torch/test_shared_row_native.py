"""A weight row shared by the groups along the batch axis, on the native ``F.batch_norm``
path (strided groups, a batch that is a multiple of K): the layer expands the (1, C) row
to (K, C), which for one channel flattens to a stride-0 view; PyTorch's CPU
``batch_norm`` backward then returned an input gradient of about zero on (N, 1) input
(``GhostBatchNorm1d(1)``), found by the conformance suite's randomized profile. Held here
against the reference, deterministically, for one and several channels."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import localnorm.torch as lt  # noqa: E402
from localnorm import reference  # noqa: E402


@pytest.mark.parametrize("shape", [(8, 1), (8, 1, 3), (8, 1, 2, 2), (8, 3), (12, 2, 3)])
@pytest.mark.parametrize("partition", ["strided", "contiguous"])
def test_shared_row_gradients_equal_reference(shape, partition):
    rng = np.random.default_rng(0)
    x, cotangent = rng.normal(size=shape), rng.normal(size=shape)
    c = shape[1]
    layer = lt.LocalNorm(c, num_groups=4, partition=partition, shared_affine=True).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, size=(1, c))))
        layer.bias.copy_(torch.from_numpy(rng.normal(size=(1, c))))
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(torch.from_numpy(cotangent))
    gamma, beta = (p.detach().numpy() for p in (layer.weight, layer.bias))
    kwargs = dict(axis=1, partition=partition, num_groups=4)
    np.testing.assert_allclose(y.detach().numpy(),
                               reference.local_norm(x, gamma, beta, **kwargs), atol=1e-12)
    dx, dgamma, dbeta = reference.local_norm_vjp(x, gamma, beta, cotangent, **kwargs)
    np.testing.assert_allclose(xt.grad.numpy(), dx, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad.numpy(), dgamma, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad.numpy(), dbeta, atol=1e-12)
