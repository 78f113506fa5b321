"""Group-per-rank DistributedDataParallel: 2 gloo processes on 127.0.0.1 train the same
parameters as one process on the concatenated batch with the contiguous partition."""

from __future__ import annotations

import socket

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402

import localnorm.torch as lt  # noqa: E402

WORLD = 2
STEPS = 4
LOCAL_BATCH = 6


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), lt.LocalNorm2d(4, WORLD, track_running_stats=True),
        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 3),
    )
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.normal_()
    return net


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, WORLD * LOCAL_BATCH, 3, 5, 5, generator=g)
    y = torch.randint(3, (STEPS, WORLD * LOCAL_BATCH), generator=g)
    return x, y


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        net = lt.set_group_per_rank(_model())
        # broadcast_buffers=False: each rank owns the running statistics of its group.
        ddp = nn.parallel.DistributedDataParallel(net, broadcast_buffers=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        xs, ys = _data()
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        for x, y in zip(xs, ys):
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x[local]), y[local]).backward()
            opt.step()
        torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, f"{out}.{rank}")
        # Both ranks leave together: rank 0 hosts the TCP store, and its exit while the
        # other rank still talks to it aborted a CI run ("terminate called without an
        # active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_group_per_rank_ddp_equals_single_process(tmp_path):
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)

    net = _model()  # one process, the concatenated batch, contiguous groups
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for x, y in zip(*_data()):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    expected = net.state_dict()

    states = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    for name, value in expected.items():
        if "running" in name:
            for r, state in enumerate(states):  # rank r tracked group r's statistics
                torch.testing.assert_close(state[name][r], value[r], atol=1e-6, rtol=1e-5)
        elif name != "1.num_batches_tracked":
            for state in states:
                torch.testing.assert_close(state[name], value, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(expected["1.weight"][0], expected["1.weight"][1])
