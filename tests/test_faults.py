"""Things going wrong around a job: clients vanishing at every point of its life, damaged model files,
the device running out of memory, an outputs disk that is full or read-only, and SIGTERM mid-job.

Each fault must end the job with one clear message (or none, when nobody is left to hear it),
leave the server serving, and show in the job log.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import PIL.Image
import pytest
import torch
import websockets
import websockets.sync.client
from safetensors.torch import load_file, save_file

from server.config import ServerConfig
from server.models.memory import is_out_of_memory
from shared.client import Client, ServerError
from shared.messages import Cancel, Cancelled, Error, Image, Progress, Queued, Result
from testing.processes import ServerProcess, free_port
from testing.raw_client import RawClient
from testing.serving import job_log, running_server, slow_request, tiny_request, url, wait_for_log, wait_until

ROOT = Path(__file__).resolve().parents[1]

request = functools.partial(tiny_request, steps=1)


def first_progress(client: Client) -> Progress:
    for message in client.messages(timeout=60):
        if isinstance(message, Progress):
            return message


def the_server_still_works(server) -> None:
    with Client(url(server), name="next") as client:
        assert client.generate(request(), timeout=120).images


# --- clients that vanish ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_leaving_cancels_its_running_and_queued_jobs(server, how):
    running, waiting = slow_request(), request()
    leaver = RawClient(url(server))
    leaver.hello()
    leaver.send(running)
    leaver.send(waiting)
    while not isinstance(leaver.receive(), Progress):
        pass
    leaver.abort() if how == "reset" else leaver.close()
    lines = wait_for_log(server, [running.id, waiting.id])
    for job in (running, waiting):
        assert (lines[job.id]["outcome"], lines[job.id]["reason"]) == ("cancelled", "client disconnected")
    assert lines[waiting.id]["run_s"] is None  # never started
    wait_until(lambda: not server.connections, what="the connection to be dropped")
    the_server_still_works(server)


def test_a_client_leaving_right_after_sending_a_job(server):
    job = slow_request()
    leaver = RawClient(url(server))
    leaver.hello()
    leaver.send(job)
    leaver.abort()
    wait_until(lambda: not server.connections, what="the connection to be dropped")
    # The job was either never taken, or taken and cancelled: it never runs to its end for nobody.
    time.sleep(0.5)
    line = job_log(server).get(job.id)
    assert line is None or (line["outcome"], line["reason"]) == ("cancelled", "client disconnected")
    the_server_still_works(server)


def test_a_cancel_that_crosses_the_end_of_its_job_is_answered_after_the_job_ended(server):
    job = request()
    recording = threading.Event()
    log_to_file = server.queue.on_end

    def slow_record(ended, message) -> None:
        if ended.id == job.id:
            recording.set()
            time.sleep(0.3)  # a slow disk under the job log: the job is over, its result not yet sent
        log_to_file(ended, message)

    server.queue.on_end = slow_record
    try:
        with Client(url(server)) as client:
            client.send(job)
            assert recording.wait(60)
            client.send(Cancel(id=job.id))
            replies = []
            for message in client.messages(timeout=30):
                if not isinstance(message, (Queued, Progress)):
                    replies.append(message)
                if len(replies) == 2:
                    break
    finally:
        server.queue.on_end = log_to_file
    assert isinstance(replies[0], Result) and replies[0].id == job.id
    assert (replies[1].code, replies[1].id) == ("not_found", job.id)


def big_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGBA", (width, height), (40, 90, 200, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_client_vanishing_while_its_result_is_sent(server, caplog):
    # A 2048x2048 result is 16 MiB of rgba8: it cannot all fit in socket buffers of a client that stops reading.
    source = Image(width=2048, height=2048, format="png", data=big_png(2048, 2048))
    job = request(mode="img2img", image=source, fit_native=True, strength=0.5, steps=2)
    client = RawClient(url(server), receive_buffer=4096)
    client.hello()
    client.send(job)
    while not isinstance(message := client.receive(timeout=120), Progress) or message.step < message.total:
        assert not isinstance(message, (Result, Error, Cancelled)), message
    # The client stops reading here; wait until the result is stuck in the server's buffers, then vanish.
    (connection,) = server.connections
    transport = connection.websocket.transport
    wait_until(lambda: transport.get_write_buffer_size() > 4 * 2**20, timeout=60, what="the result to be sending")
    with caplog.at_level(logging.ERROR):
        client.abort()
        wait_until(lambda: not server.connections, what="the connection to be dropped")
        line = wait_for_log(server, [job.id])[job.id]
        the_server_still_works(server)
    assert line["outcome"] == "result" and line["size"] == "2048x2048"
    assert not [r for r in caplog.records if r.name.startswith("underpaint")]


# --- damaged models ----------------------------------------------------------------------------------


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def wrong_shape(path: Path) -> None:
    tensors = load_file(path)
    key = "model.diffusion_model.out.2.weight"
    tensors[key] = tensors[key][:2].clone()
    save_file(tensors, path)


@pytest.fixture
def own_models(models_dir, tmp_path):
    """A models folder with the tiny SD1.5 model and a copy of its single-file version named `victim`."""
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "tiny-sd15").symlink_to(models_dir / "checkpoints" / "tiny-sd15")
    shutil.copy(models_dir / "checkpoints" / "tiny-sd15-single.safetensors", checkpoints / "victim.safetensors")
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15-single.config", checkpoints / "victim.config")
    return tmp_path / "models"


@pytest.mark.parametrize("damage", [cut_in_half, wrong_shape], ids=["truncated", "wrong-shape"])
def test_a_model_file_damaged_after_the_scan_is_an_error_and_marked_broken(own_models, tmp_path, damage):
    with running_server(ServerConfig(models=[own_models], outputs=tmp_path / "outputs")) as server:
        with Client(url(server)) as client:
            assert not {m.name: m for m in client.welcome.models}["victim"].refused
            damage(own_models / "checkpoints" / "victim.safetensors")
            with pytest.raises(ServerError) as failed:
                client.generate(request(model="victim"), timeout=120)
            error = failed.value.error
            assert (error.code, error.field) == ("model_broken", "model")
            assert "victim could not be loaded" in error.message and str(own_models) not in error.message
            # Other models still work, and the broken one is refused at once, with its reason.
            assert client.generate(request(), timeout=120).images
            again = request(model="victim")
            client.send(again)
            refused = client.receive(timeout=10)
            assert (refused.code, refused.id) == ("model_broken", again.id)
        with Client(url(server)) as late:
            listed = {m.name: m for m in late.welcome.models}["victim"]
            assert listed.refused.startswith("could not be loaded")


def test_a_truncated_model_found_by_the_scan_is_listed_as_refused(server):
    with Client(url(server)) as client:
        listed = {m.name: m for m in client.welcome.models}["broken"]
        assert "truncated" in listed.refused
        job = request(model="broken")
        client.send(job)
        error = client.receive(timeout=10)
    assert (error.code, error.id) == ("model_broken", job.id) and "truncated" in error.message


# --- out of memory ----------------------------------------------------------------------------------


OUT_OF_MEMORY = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 10000000000 bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 GB)"),
    MemoryError(),
]
NOT_OUT_OF_MEMORY = [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("out of range"),
                     OSError("No space left on device")]


@pytest.mark.parametrize(("exc", "expected"),
                         [(e, True) for e in OUT_OF_MEMORY] + [(e, False) for e in NOT_OUT_OF_MEMORY],
                         ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None)
def test_out_of_memory_is_recognised_by_type_or_allocator_message(exc, expected):
    assert is_out_of_memory(exc) is expected


@contextmanager
def unet_failing_once(server, exc: BaseException):
    """The model's UNet raises `exc` on its next call, holding a 16 MiB tensor as a real step would."""
    pipe = server.cache.get(server.registry.get("tiny-sd15"))
    held: list[weakref.ref] = []

    def forward(*args, **kwargs):
        del pipe.unet.forward
        activations = torch.ones(4 * 2**20)
        held.append(weakref.ref(activations))
        raise type(exc)(*exc.args)  # a new one: a raised exception keeps its frames, and the cases are reused

    pipe.unet.forward = forward
    try:
        yield held
    finally:
        pipe.unet.__dict__.pop("forward", None)


@pytest.mark.parametrize("exc", OUT_OF_MEMORY, ids=lambda e: type(e).__name__)
def test_out_of_memory_in_a_step_is_an_error_with_advice_and_the_next_job_runs(server, exc):
    with Client(url(server)) as client:
        client.generate(request(), timeout=120)  # the model is loaded
        with unet_failing_once(server, exc) as held:
            job = request(width=512, height=384, batch_size=3)
            with pytest.raises(ServerError) as failed:
                client.generate(job, timeout=120)
        error = failed.value.error
        assert (error.code, error.id) == ("out_of_memory", job.id)
        assert "3 images at 512x384" in error.message
        assert "smaller size" in error.message and "fewer images" in error.message
        assert "close other applications" in error.message
        # What the failed step held is freed by the time the error is sent.
        assert held and held[0]() is None
        assert client.generate(request(), timeout=120).images
    assert wait_for_log(server, [job.id])[job.id]["code"] == "out_of_memory"


def test_running_out_of_memory_while_loading_does_not_mark_the_model_broken(server, monkeypatch):
    from diffusers import StableDiffusionXLPipeline

    def fail(*args, **kwargs):
        monkeypatch.undo()
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", fail)
    with Client(url(server)) as client:
        with pytest.raises(ServerError) as failed:
            client.generate(request(model="tiny-sdxl"), timeout=120)
        assert (failed.value.error.code, failed.value.error.field) == ("out_of_memory", "model")
        assert client.generate(request(model="tiny-sdxl"), timeout=120).images
    with Client(url(server)) as late:
        assert not {m.name: m for m in late.welcome.models}["tiny-sdxl"].refused


def test_a_failure_that_is_not_out_of_memory_stays_internal(server):
    with Client(url(server)) as client:
        client.generate(request(), timeout=120)
        with unet_failing_once(server, RuntimeError("mat1 and mat2 shapes cannot be multiplied")):
            with pytest.raises(ServerError) as failed:
                client.generate(request(), timeout=120)
        assert failed.value.error.code == "internal"
        assert "mat1" not in failed.value.error.message  # internals stay in the server's log


# --- outputs that cannot be written ----------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def full_disk(path: Path):
    with tmpfs(path, "size=256k") as root:
        with open(root / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\x00" * 65536)
                    filler.flush()
            except OSError:
                pass
        yield root


@contextmanager
def read_only_disk(path: Path):
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)
        return
    with tmpfs(path, "ro,size=1m") as root:
        yield root


@contextmanager
def not_a_folder(path: Path):
    path.write_bytes(b"a file where the outputs folder should be")
    yield path


@pytest.mark.parametrize(("outputs", "reason"), [
    (full_disk, "No space left on device"),
    (read_only_disk, "Read-only file system"),
    (not_a_folder, "Not a directory"),
], ids=["disk-full", "read-only", "not-a-folder"])
def test_results_are_delivered_when_the_outputs_folder_cannot_be_written(models_dir, tmp_path, caplog, outputs,
                                                                         reason):
    with outputs(tmp_path / "outputs") as root, caplog.at_level(logging.ERROR, logger="underpaint.outputs"):
        with running_server(ServerConfig(models=[models_dir], outputs=root)) as server:
            with Client(url(server)) as client:
                result = client.generate(request(width=128, height=128, result_format="png"), timeout=120)
    image = PIL.Image.open(io.BytesIO(result.images[0].image.data))
    assert image.size == (128, 128)
    logged = [r.getMessage() for r in caplog.records if r.name == "underpaint.outputs"]
    assert logged and "could not save a result" in logged[0]
    if os.geteuid() == 0 or outputs is not read_only_disk:
        assert reason in logged[0]


def test_unfinished_results_of_a_killed_server_are_removed_at_start(models_dir, tmp_path):
    day = tmp_path / "outputs" / "2026-11-30"
    day.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left_over = day / f".101010-{gone.stdout.strip()}-00007-42.png.tmp"  # a server killed with -9 while saving
    running = day / f".101010-{os.getpid()}-00001-42.png.tmp"  # another server saving into the same folder now
    finished = day / "101010-1-00001-42.png"
    for path in (left_over, running, finished):
        path.write_bytes(b"png")
    with running_server(ServerConfig(models=[models_dir], outputs=tmp_path / "outputs")):
        assert sorted(p.name for p in day.iterdir()) == sorted([running.name, finished.name])


# --- the server stopped ------------------------------------------------------------------------------------


def cancel_reasons(*clients: Client) -> dict[str, str | None]:
    """Job id -> reason of every `cancelled` the clients get until the server closes their connections."""
    told = {}
    for client in clients:
        try:
            for message in client.messages(timeout=15):
                if isinstance(message, Cancelled):
                    told[message.id] = message.reason
        except websockets.ConnectionClosed:
            pass
    return told


def test_sigterm_stops_a_busy_server_within_10_s_and_every_job_is_told(models_dir, tmp_path):
    """Also runs the command line's --log-file and --allow-origin."""
    port, log_file = free_port(), tmp_path / "logs" / "jobs.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--models", str(models_dir), "--port", str(port),
         "--outputs", str(tmp_path / "outputs"), "--log-file", str(log_file),
         "--allow-origin", "https://krita.example"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    address = f"ws://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(address)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
                time.sleep(0.2)
        with websockets.sync.client.connect(address, origin="https://krita.example"):
            pass
        with pytest.raises(websockets.InvalidStatus):
            websockets.sync.client.connect(address, origin="https://evil.example")
        with client:
            running, waiting = slow_request(), request()
            client.send(running)
            client.send(waiting)
            first_progress(client)
            # A client that never reads anything must not hold the server up either.
            stuck = RawClient(address)
            stuck.hello()
            stuck.send(request())
            time.sleep(0.2)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            told = cancel_reasons(client)
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - signalled < 10
        assert told == {running.id: "server stopping", waiting.id: "server stopping"}
        lines = {line["id"]: line for line in map(json.loads, log_file.read_text().splitlines())}
        assert {lines[j.id]["outcome"] for j in (running, waiting)} == {"cancelled"}
        assert len(lines) == 3  # the stuck client's job too
    finally:
        process.kill()
        process.wait()


def test_sigterm_during_a_step_that_takes_a_minute_stops_within_10_s_and_tells_every_client(tmp_path):
    with ServerProcess(None, tmp_path) as server:
        first, second = Client(server.url, name="large"), Client(server.url, name="waiting")
        large, small = request(width=2048, height=2048, steps=2), request()
        first.send(large)
        assert isinstance(first.receive(timeout=30), Queued)
        second.send(small)
        assert isinstance(second.receive(timeout=30), Queued)
        time.sleep(3)  # inside the first step, which takes most of a minute here
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        told = cancel_reasons(first, second)
        status = server.process.wait(timeout=15)
        stopped = time.monotonic() - signalled
        lines = {line["id"]: line for line in server.job_lines()}
        server.process = None
    print(f"\nstopped {stopped:.1f} s after SIGTERM")
    assert status == 0 and stopped < 10
    assert told == {large.id: "server stopping", small.id: "server stopping"}
    assert {lines[job.id]["outcome"] for job in (large, small)} == {"cancelled"}
    printed = server.log.read_text()
    assert "terminate called" not in printed
    assert "still inside one operation" not in printed  # the worker stopped at a check point in the step
