"""Session set-up shared by every test.

Two-process DDP tests ask Lightning for ``strategy="ddp_spawn"`` (gloo on CPU). In this test session those registry
entries start their processes with the ``forkserver`` method instead of ``spawn``: both give fresh processes that
receive the trainer and the module pickled (the same constraints, so a test that passes here passes with spawn),
but the forkserver imports torch, Lightning and lt_lightning ONCE per session and forks each rank from that clean
server, where spawn re-imports them in every rank of every test (about 5-10 s per test on two cores). The server is
a separate process started before any test runs a computation: no threads or state of the pytest process leak in.
"""

from __future__ import annotations

import multiprocessing

from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

_PRELOAD = ["torch", "lightning", "lt_lightning", "lt_lightning.methods", "lt_lightning.data", "lt_lightning.callbacks"]
multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)

for _name, _kwargs in {
    "ddp_spawn": {},
    "ddp_spawn_find_unused_parameters_true": {"find_unused_parameters": True},
    "ddp_spawn_find_unused_parameters_false": {"find_unused_parameters": False},
}.items():
    StrategyRegistry.register(
        _name,
        DDPStrategy,
        description=f"{_name} with the forkserver start method (test session, see tests/conftest.py)",
        start_method="forkserver",
        override=True,
        **_kwargs,
    )
