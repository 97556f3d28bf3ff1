"""Joining (or starting) a Ray cluster and deploying the replicas on it: what `--cluster` adds to
`underpaint serve`.

Every replica is a Ray Serve application of its own, one deployment with one replica holding one
device, so that the front end, which knows each job's model, live session and cancel, chooses the
replica (server/jobs/routing.py); Ray places the replicas on the machines, restarts one whose process
dies, and carries the calls and the progress streams.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..config import ServerConfig
from ..imaging.outputs import OutputWriter
from ..models.fingerprints import fingerprints
from ..models.registry import Registry
from .remote import Estimates, RemoteWorker
from .replica import Replica, ReplicaSettings

log = logging.getLogger("underpaint.cluster")

APP_PREFIX = "underpaint-"
# Calls the front end has open to one replica at once: the job's stream, a cancel, a look at it.
MAX_ONGOING = 8
# Starting a replica loads PyTorch and reads the models' fingerprints; on a busy machine that is slow.
START_TIMEOUT = 600.0


@dataclass
class Cluster:
    workers: list[RemoteWorker]
    apps: list[str]
    started_ray: bool

    @classmethod
    def start(cls, config: ServerConfig, registry: Registry, outputs: OutputWriter,
              estimates: Estimates | None = None) -> Cluster:
        started_ray = connect(config.cluster)
        import ray
        from ray import serve
        from ray.serve.api import RunTarget

        # No HTTP proxy: the websocket front end is the only way in.
        serve.start(proxy_location="Disabled")
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = config.replicas or max(gpus, 1)
        resources = {"num_gpus": 1} if gpus else {"num_cpus": config.replica_threads or 1}
        settings = ReplicaSettings(models=tuple(str(folder.resolve()) for folder in config.models),
                                   device=config.device, dtype=config.dtype, cache_size=config.cache_size,
                                   threads=config.replica_threads, loopback=started_ray)
        deployment = serve.deployment(Replica)
        apps = [f"{APP_PREFIX}{index}" for index in range(count)]
        targets = [RunTarget(deployment.options(name=app, num_replicas=1, max_ongoing_requests=MAX_ONGOING,
                                                ray_actor_options=resources).bind(settings),
                             name=app, route_prefix=None) for app in apps]
        log.info("starting %d replicas (%s each)", count, resources)
        handles = serve.run_many(targets)
        reference = fingerprints(registry)
        workers = []
        for app, handle in zip(apps, handles, strict=True):
            info = handle.describe.remote().result(timeout_s=START_TIMEOUT)
            workers.append(RemoteWorker(app, handle, info, reference, outputs, estimates))
            log.info("%s: %s on %s", app, info.device, info.node)
        if all(worker.refused for worker in workers):
            raise ValueError("every replica has model files that differ from the front end's "
                             f"({', '.join(workers[0].refused)}): give every machine the same models")
        return cls(workers, apps, started_ray)

    def stop(self) -> None:
        import ray
        from ray import serve

        for app in self.apps:
            try:
                serve.delete(app)
            except Exception as exc:  # the cluster may be gone already
                log.warning("could not remove %s from the cluster: %s", app, exc)
        if self.started_ray:
            serve.shutdown()
            ray.shutdown()


def connect(address: str | None) -> bool:
    """Join the cluster at `address` ("ray://HEAD:10001" through Ray Client, or HEAD:6379 from a machine
    of the cluster), or with "auto" start a Ray of this machine's own, on loopback only. True when
    this process started it (and stops it)."""
    if address == "auto":
        # Ray listens on every interface unless it is told it runs on one machine only (its setting for
        # laptops, read when Ray is imported; its processes inherit it): then all of it is on loopback.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    if address == "auto":
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 num_cpus=os.cpu_count(), logging_level=logging.WARNING, log_to_driver=False)
        return True
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return False
