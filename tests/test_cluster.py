"""A cluster on this machine: the server started with `--cluster auto` starts a Ray of its own on
loopback with two CPU replicas (one thread each) and the tiny models, and the real client drives it as
it drives one machine. Jobs from several clients spread over both replicas; a model's next job goes
where it is loaded; a live session stays on one replica; progress with previews and cancel cross to
the replica; a replica killed mid-job gives a re-run result with the same pixels; the results are
written by the front end. The server stops Ray when it stops."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from server.config import ServerConfig
from shared.client import Client
from shared.messages import Cancel, Cancelled, Error, Image, Live, Progress, Queued, Result
from testing.processes import ServerProcess
from testing.serving import running_server, tiny_request, url, wait_for_log, wait_until

# Not imported here: the server sets how Ray listens before it imports it.
if importlib.util.find_spec("ray") is None:
    pytest.skip("ray is not installed (pip install underpaint[cluster])", allow_module_level=True)

# Ray and two replicas start in under a minute on a shared machine: the first test (welcome and what
# listens where) stays in the default run, the others take a minute more.
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("cluster")
    config = ServerConfig(models=[models_dir], outputs=folder / "outputs", log_file=folder / "jobs.log",
                          cluster="auto", replicas=2, replica_threads=1, device="cpu")
    with running_server(config) as server:
        yield server
    import ray

    assert not ray.is_initialized()


def picture(request_fields: dict, client: Client) -> bytes:
    return client.generate(tiny_request(**request_fields), timeout=120).images[0].image.data


def workers_of(server, ids) -> dict[str, str]:
    return {job_id: line["worker"] for job_id, line in wait_for_log(server, ids, timeout=120).items() if job_id in ids}


def test_welcome_lists_both_replicas_and_ray_listens_on_loopback_only(cluster) -> None:
    import psutil

    with Client(url(cluster), name="test") as client:
        device = client.welcome.device
    assert device.startswith("2 replicas: ") and device.count("cpu (float32) on 127.0.0.1") == 2
    ours = psutil.Process()
    family = {ours.pid} | {child.pid for child in ours.children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in family]
    wide = [(c.laddr, psutil.Process(c.pid).name()) for c in listening if not loopback(c.laddr.ip)]
    assert listening and not wide, wide


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


@slow
def test_jobs_from_several_clients_spread_over_both_replicas_with_previews(cluster) -> None:
    ids, previews, results = [], [], []

    def artist(name: str) -> None:
        with Client(url(cluster), name=name) as client:
            for index in range(2):
                request = tiny_request(steps=12, preview=True, seed=index)
                ids.append(request.id)
                results.append(client.generate(request, timeout=120, on_message=lambda m: previews.append(m)
                                               if isinstance(m, Progress) and m.preview is not None else None))

    threads = [threading.Thread(target=artist, args=(f"artist-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert len(results) == 4 and all(isinstance(r, Result) for r in results)
    assert set(workers_of(cluster, ids).values()) == {"underpaint-0", "underpaint-1"}
    assert previews and isinstance(previews[0].preview, Image)
    saved = list((cluster.config.outputs).rglob("*.png"))
    assert len(saved) >= 4  # written by the front end, before each result was sent


@slow
def test_the_next_job_for_a_model_goes_where_it_is_loaded(cluster) -> None:
    with Client(url(cluster), name="test") as client:
        first = tiny_request(model="tiny-sd15-single")
        client.generate(first, timeout=120)
        other = tiny_request(model="tiny-sdxl")
        client.generate(other, timeout=120)
        again = tiny_request(model="tiny-sd15-single")
        queued = []
        client.generate(again, timeout=120, on_message=lambda m: queued.append(m) if isinstance(m, Queued) else None)
    where = workers_of(cluster, [first.id, other.id, again.id])
    assert where[again.id] == where[first.id] != where[other.id]
    # The replica's measured step cost came back with the first job: the front end can estimate.
    assert queued[0].estimate_s is not None and queued[0].estimate_s > 0


@slow
def test_a_live_session_stays_on_one_replica(cluster) -> None:
    with Client(url(cluster), name="painter") as client:
        start = client.generate(tiny_request(), timeout=120).images[0].image
        frames = []
        for index in range(4):
            frame = Live(session="canvas", **vars(tiny_request(mode="img2img", image=start, strength=0.5, seed=index)))
            frames.append(frame.id)
            client.generate(frame, timeout=120)
    assert len(set(workers_of(cluster, frames).values())) == 1


@slow
def test_cancel_reaches_the_running_replica_within_a_step(cluster) -> None:
    with Client(url(cluster), name="test") as client:
        job = tiny_request(width=256, height=256, steps=150)
        client.send(job)
        steps, asked = 0, None
        for message in client.messages(timeout=120):
            if isinstance(message, Progress) and message.id == job.id:
                steps = message.step
                if steps == 2 and asked is None:
                    client.send(Cancel(id=job.id))
                    asked = time.monotonic()
            if isinstance(message, Cancelled | Result | Error) and message.id == job.id:
                break
        assert isinstance(message, Cancelled) and steps <= 6
        assert time.monotonic() - asked < 5.0
        assert client.generate(tiny_request(), timeout=120).images  # the replica took the next job


@slow
def test_a_replica_killed_mid_job_gives_the_same_pixels_from_the_other(cluster) -> None:
    fields = {"width": 128, "height": 128, "steps": 40, "seed": 77}
    with Client(url(cluster), name="test") as client:
        expected = picture(fields, client)
        victim = cluster.workers[0]
        pid = killed = victim.info.pid
        # Both replicas busy, so that one of the two jobs is on the victim for sure.
        jobs = [tiny_request(**fields), tiny_request(**fields)]
        for job in jobs:
            client.send(job)
        started: set[str] = set()
        ended: dict[str, list] = {job.id: [] for job in jobs}
        for message in client.messages(timeout=240):
            if isinstance(message, Progress):
                started.add(message.id)
                if len(started) == 2 and pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    pid = None
            if isinstance(message, Result | Cancelled | Error):
                ended[message.id].append(message)
                if all(ended.values()):
                    break
        time.sleep(1.0)  # a second terminal message would arrive now
        while True:
            try:
                message = client.receive(timeout=0.2)
            except TimeoutError:
                break
            if isinstance(message, Result | Cancelled | Error):
                ended[message.id].append(message)
    assert all(len(messages) == 1 for messages in ended.values()), ended
    for (message,) in ended.values():
        assert isinstance(message, Result) and message.images[0].image.data == expected
    lines = wait_for_log(cluster, [job.id for job in jobs])
    assert sorted(lines[job.id].get("attempts", 1) for job in jobs) == [1, 2]
    # Ray Serve starts the replica again and it rejoins.
    wait_until(lambda: victim.info.pid != killed, timeout=240, what="the replica started again")
    with Client(url(cluster), name="test") as client:
        assert picture(fields, client) == expected


@slow
def test_underpaint_serve_with_a_ray_of_its_own_answers_and_stops_with_it(tmp_path: Path) -> None:
    import psutil

    server = ServerProcess(None, tmp_path, "--cluster", "auto", "--replicas", "1", "--replica-threads", "1",
                           "--device", "cpu")
    server.start(timeout=300)
    try:
        with Client(server.url, name="test") as client:
            assert client.welcome.device.startswith("1 replica: underpaint-0 cpu (float32) on 127.0.0.1")
            assert client.generate(tiny_request(), timeout=120).images
        process = server.process
        ray_processes = psutil.Process(process.pid).children(recursive=True)
        assert ray_processes
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        _, left = psutil.wait_procs(ray_processes, timeout=30)
        assert not [p for p in left if p.status() != psutil.STATUS_ZOMBIE], left
    finally:
        server.kill()
