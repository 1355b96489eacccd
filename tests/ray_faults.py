"""Faults for tests/test_ray.py, set up in every Ray worker process (runtime_env's
worker_process_setup_hook): they reach the workers, where monkeypatching in the test cannot."""

from __future__ import annotations

import os


def die_once() -> None:
    """The first model call anywhere on the cluster kills its worker process outright, as an
    out-of-memory kill or a lost node would; every later call runs as usual."""
    from reportgen.inference import ray_engine

    real = ray_engine.ModelActor.__call__

    def dying(self, batch):
        marker = os.environ["REPORTGEN_TEST_DIE_ONCE"]
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return real(self, batch)
        os.close(fd)
        os._exit(1)

    ray_engine.ModelActor.__call__ = dying
