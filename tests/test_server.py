"""The real server on loopback, driven by the real client: handshake, generation, cancel, bad input."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import PIL.Image
import psutil
import pytest
import websockets.sync.client

from server.config import ServerConfig
from shared import codec
from shared.client import Client, JobCancelled, ServerError
from shared.messages import (
    Cancel,
    Cancelled,
    Error,
    Generate,
    Hello,
    Image,
    ListModels,
    Mask,
    ModelList,
    Progress,
    Queued,
    Region,
    Result,
    Welcome,
)
from testing.processes import ServerProcess
from testing.serving import running_server, slow_request, tiny_request, url

ROOT = Path(__file__).resolve().parents[1]

request = tiny_request


def pixels(result: Result, index: int = 0) -> bytes:
    return result.images[index].image.data


def rgba_image(width: int, height: int, colour=(200, 30, 30, 255), x: int = 0, y: int = 0) -> Image:
    return Image(width=width, height=height, format="rgba8", data=bytes(colour) * (width * height), x=x, y=y)


def error_of(client: Client, message) -> Error:
    client.send(message)
    for reply in client.messages(timeout=30):
        if isinstance(reply, Error):
            return reply
        assert isinstance(reply, (Queued, Progress)), reply


# --- handshake and security ------------------------------------------------------------------------


def test_welcome_lists_models_schedulers_and_limits(client):
    welcome = client.welcome
    assert welcome.protocol == 1
    names = {m.name: m for m in welcome.models}
    assert names["tiny-sd15"].family == "sd15" and names["tiny-sdxl"].family == "sdxl"
    assert names["tiny-sd15-inpaint"].variant == "inpaint"
    assert all(not hasattr(m, "path") for m in welcome.models)
    assert {"euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "lcm"} <= set(welcome.schedulers)
    assert welcome.limits.max_side == 4096 and welcome.limits.max_regions == 16


def test_protocol_mismatch_is_refused_and_closed(server):
    with websockets.sync.client.connect(url(server)) as ws:
        ws.send(codec.encode(Hello(protocol=2, client="future")))
        reply = codec.decode_server(ws.recv(timeout=10))
        assert (reply.code, reply.field) == ("protocol_mismatch", "protocol")
        with pytest.raises(websockets.ConnectionClosed):
            ws.recv(timeout=10)


def test_nothing_is_served_before_hello(server):
    with websockets.sync.client.connect(url(server)) as ws:
        ws.send(codec.encode(ListModels()))
        reply = codec.decode_server(ws.recv(timeout=10))
        assert reply.code == "unauthorized"
        ws.send(codec.encode(Hello(protocol=1, client="late")))
        assert isinstance(codec.decode_server(ws.recv(timeout=10)), Welcome)


def test_token_is_checked(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, token="s3cret")
    with running_server(config) as server:
        with pytest.raises(ServerError) as caught:
            Client(url(server), token="wrong")
        assert caught.value.error.code == "unauthorized"
        with Client(url(server), token="s3cret") as ok:
            assert ok.welcome.models


def test_non_loopback_bind_needs_a_token(models_dir, tmp_path):
    with pytest.raises(ValueError, match="--token"):
        ServerConfig(models=[models_dir], host="0.0.0.0", outputs=tmp_path).check()
    ServerConfig(host="0.0.0.0", token="x").check()
    ServerConfig(host="::1").check()


def test_browser_origins_are_refused(server):
    with pytest.raises(websockets.InvalidStatus):
        websockets.sync.client.connect(url(server), origin="https://evil.example")


# --- generation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl", "tiny-sd15-single", "tiny-sdxl-single",
                                   "tiny-sd15-inpaint"])
def test_txt2img_every_family_and_format(client, model):
    result = client.generate(request(model=model, width=72, height=48))
    image = result.images[0].image
    assert (image.width, image.height, image.format) == (72, 48, "rgba8")
    assert len(image.data) == 72 * 48 * 4
    assert result.info["model"] == model and result.info["mode"] == "txt2img"
    assert result.images[0].seed == 1


def test_size_is_rounded_to_the_model_multiple_and_reported(client):
    result = client.generate(request(width=70, height=45))
    assert (result.info["width"], result.info["height"]) == (72, 48)
    assert (result.images[0].image.width, result.images[0].image.height) == (72, 48)


def test_fit_native_generates_at_native_area_and_scales_back(client):
    result = client.generate(request(width=300, height=100, fit_native=True))
    assert (result.images[0].image.width, result.images[0].image.height) == (300, 100)
    native_area = result.info["generation_width"] * result.info["generation_height"]
    assert abs(native_area - 256 * 256) / (256 * 256) < 0.1  # tiny models are native at 256 px


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_img2img_keeps_position_and_size(client, model):
    source = rgba_image(40, 24, x=1000, y=2000)
    result = client.generate(request(model=model, mode="img2img", image=source, strength=0.5))
    image = result.images[0].image
    assert (image.x, image.y, image.width, image.height) == (1000, 2000, 40, 24)
    assert result.info["strength"] == 0.5


def test_same_seed_same_pixels_and_batch_seeds(client):
    first = client.generate(request(seed=42, batch_size=2))
    again = client.generate(request(seed=42, batch_size=2))
    other = client.generate(request(seed=43))
    assert [i.seed for i in first.images] == [42, 43]
    assert pixels(first, 0) == pixels(again, 0) and pixels(first, 1) == pixels(again, 1)
    assert pixels(first, 0) != pixels(first, 1)
    assert pixels(other) == pixels(first, 1)


def test_random_seed_is_reported_and_reproduces(client):
    result = client.generate(request(seed=None))
    again = client.generate(request(seed=result.images[0].seed))
    assert pixels(result) == pixels(again)


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "lcm"])
def test_schedulers(client, scheduler):
    result = client.generate(request(scheduler=scheduler))
    assert result.info["scheduler"] == scheduler


def test_progress_with_small_previews(client):
    seen = []
    client.generate(request(steps=3, preview=True, width=512, height=512), on_message=seen.append)
    progress = [m for m in seen if isinstance(m, Progress)]
    assert [p.step for p in progress] == [1, 2, 3] and all(p.total == 3 for p in progress)
    assert all(p.preview is not None and max(p.preview.width, p.preview.height) <= 256 for p in progress)
    assert isinstance(seen[0], Queued)


def test_png_results_carry_parameters_and_are_on_disk(client, server):
    result = client.generate(request(prompt="a blue square", negative_prompt="blurry", result_format="png",
                                     seed=7))
    image = PIL.Image.open(io.BytesIO(result.images[0].image.data))
    saved = sorted(server.config.outputs.rglob("*-7.png"))
    assert saved, "the result was not written to the outputs folder"
    parameters = PIL.Image.open(saved[-1]).text["parameters"]
    assert parameters.startswith("a blue square\nNegative prompt: blurry\n")
    assert "Steps: 2" in parameters and "Seed: 7" in parameters and "Model: tiny-sd15" in parameters
    assert image.size == (64, 64)


def test_models_rescans_folders(client, models_dir):
    extra = models_dir / "checkpoints" / "late-arrival"
    assert "late-arrival" not in {m.name for m in client.models()}
    try:
        import shutil

        shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", extra)
        assert "late-arrival" in {m.name for m in client.models()}
    finally:
        shutil.rmtree(extra, ignore_errors=True)


# --- cancel and responsiveness ------------------------------------------------------------------------


def test_cancel_a_queued_job_at_once(client):
    running, waiting = slow_request(), request()
    client.send(running)
    client.send(waiting)
    client.send(Cancel(id=waiting.id))
    client.send(Cancel(id=running.id))
    terminal = {}
    for message in client.messages(timeout=60):
        if isinstance(message, (Result, Cancelled, Error)):
            assert message.id not in terminal, "two terminal messages for one job"
            terminal[message.id] = message
        if len(terminal) == 2:
            break
    assert all(isinstance(m, Cancelled) for m in terminal.values())


def test_cancel_a_running_job_within_a_step(client):
    job = slow_request()
    client.send(job)
    steps = 0
    for message in client.messages(timeout=60):
        if isinstance(message, Progress):
            steps = message.step
            if steps == 2:
                client.send(Cancel(id=job.id))
        if isinstance(message, (Cancelled, Result, Error)):
            break
    assert isinstance(message, Cancelled) and steps <= 4
    # Nothing else arrives for the job, and the connection still works.
    assert client.generate(request()).images


def test_a_running_job_is_cancelled_inside_a_step_that_takes_a_minute(client):
    # At 2048x2048 one step of the tiny model takes most of a minute on this machine's CPUs.
    job = request(width=2048, height=2048, steps=2)
    client.send(job)
    assert isinstance(client.receive(timeout=30), Queued)
    time.sleep(3)  # well inside the first step
    asked = time.monotonic()
    client.send(Cancel(id=job.id))
    reply = client.receive(timeout=60)
    took = time.monotonic() - asked
    print(f"\ncancelled {took * 1000:.0f} ms after asking, inside a step")
    assert isinstance(reply, Cancelled) and reply.id == job.id
    assert took < 2
    assert client.generate(request()).images


def test_queued_tells_how_long_a_job_should_take_once_its_model_has_run(models_dir, tmp_path):
    with running_server(ServerConfig(models=[models_dir], outputs=tmp_path)) as server, Client(url(server)) as client:
        told: dict[str, float | None] = {}

        def note(message) -> None:
            if isinstance(message, Queued):
                told[message.id] = message.estimate_s

        first, small, large = request(width=128, height=128), request(width=128, height=128), \
            request(width=256, height=256, steps=4)
        for job in (first, small, large):
            client.generate(job, on_message=note, timeout=120)
        unused = request(model="tiny-sdxl")
        client.generate(unused, on_message=note, timeout=120)
    assert told[first.id] is None and told[unused.id] is None  # nothing measured yet for these models
    assert told[small.id] > 0
    # Four times the pixels and twice the steps.
    assert told[large.id] == pytest.approx(8 * told[small.id], rel=0.6)


def test_loop_answers_while_a_job_runs(client, server):
    job = slow_request()
    client.send(job)
    for message in client.messages(timeout=60):
        if isinstance(message, Progress):
            break
    started = time.monotonic()
    with Client(url(server), name="other") as other:
        models = other.models()
        answered = time.monotonic() - started
    client.send(Cancel(id=job.id))
    for message in client.messages(timeout=60):
        if isinstance(message, Cancelled):
            break
    assert models and answered < 2.0


def test_disconnect_cancels_jobs_and_the_next_job_starts(server):
    leaver = Client(url(server), name="leaver")
    leaver.send(slow_request())
    leaver.send(slow_request())
    for message in leaver.messages(timeout=60):
        if isinstance(message, Progress):
            break
    leaver.close()
    started = time.monotonic()
    with Client(url(server), name="stayer") as stayer:
        stayer.generate(request())
    assert time.monotonic() - started < 10


def test_cancel_of_unknown_job(client):
    error = error_of(client, Cancel(id="nope"))
    assert (error.code, error.field, error.id) == ("not_found", "id", "nope")


# --- bad input ------------------------------------------------------------------------------------------


BAD_REQUESTS = [
    (request(model="no-such-model"), "unknown_model", "model"),
    (request(model="../checkpoints/tiny-sd15"), "bad_request", "model"),
    (request(model="old"), "model_broken", "model"),
    (request(scheduler="warp_drive"), "bad_request", "scheduler"),
    # Positions whose difference overflows 32 bits once reached the imaging code as `internal`.
    (request(regions=[Region(mask=Mask(width=8, height=8, format="a8", data=bytes(64), x=2**31 - 1, y=-(2**31)),
                             prompt="sky")]), "bad_request", "regions[0].mask.x"),
]


@pytest.mark.parametrize(("message", "code", "field"), BAD_REQUESTS, ids=[f for _, _, f in BAD_REQUESTS])
def test_bad_requests_get_errors_and_the_connection_stays_usable(client, message, code, field):
    error = error_of(client, message)
    assert (error.code, error.field, error.id) == (code, field, message.id)
    assert client.generate(request()).images


RAW_FRAMES = [
    ("text", "bad_request", "frame"),
    (b"\xc1\xc1", "bad_request", "frame"),
    (msgpack.packb({"type": "generate", "id": "x", "mode": "txt2img", "model": "tiny-sd15", "steps": "many"}),
     "bad_request", "steps"),
    (msgpack.packb({"type": "generate", "id": "x", "mode": "img2img", "model": "tiny-sd15",
                    "image": {"width": 4, "height": 4, "format": "rgba8", "data": b"123"}}),
     "bad_request", "image.data"),
    (msgpack.packb({"type": "generate", "id": "x", "mode": "txt2img", "model": "tiny-sd15", "width": 10000}),
     "too_large", "width"),
    (msgpack.packb({"type": "teleport"}), "bad_request", "type"),
]


@pytest.mark.parametrize(("frame", "code", "field"), RAW_FRAMES, ids=[f"{c}-{f}" for _, c, f in RAW_FRAMES])
def test_malformed_frames(client, frame, code, field):
    client.send_raw(frame)
    reply = client.receive(timeout=10)
    assert isinstance(reply, Error) and (reply.code, reply.field) == (code, field)
    assert client.models()


def test_png_that_lies_about_its_size(client):
    buffer = io.BytesIO()
    PIL.Image.new("RGBA", (10, 10)).save(buffer, format="PNG")
    liar = Image(width=20, height=20, format="png", data=buffer.getvalue())
    error = error_of(client, request(mode="img2img", image=liar))
    assert (error.code, error.field) == ("bad_request", "image.data")


def test_duplicate_job_id(client):
    job = slow_request()
    client.send(job)
    error = error_of(client, Generate(**{**job.__dict__}))
    assert (error.code, error.field) == ("bad_request", "id")
    client.send(Cancel(id=job.id))
    for message in client.messages(timeout=60):
        if isinstance(message, Cancelled):
            break


def test_other_clients_are_unaffected_by_garbage(server):
    with Client(url(server), name="good") as good, Client(url(server), name="bad") as bad:
        job = request()
        good.send(job)
        for garbage in (b"\x00", "hi", msgpack.packb({"type": "generate"})):
            bad.send_raw(garbage)
        for message in good.messages(timeout=60):
            if isinstance(message, Result):
                break
        assert message.id == job.id


def test_model_list_reply_type(client):
    client.send(ListModels())
    assert isinstance(client.receive(timeout=10), ModelList)


# --- command line ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_runs_and_stops_on_sigterm(models_dir, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--models", str(models_dir), "--port", str(port),
         "--outputs", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = Client(f"ws://127.0.0.1:{port}")
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, process.stdout.read()
                time.sleep(0.2)
        with client:
            client.send(slow_request())
            for message in client.messages(timeout=60):
                if isinstance(message, Progress):
                    break
            stopped = time.monotonic()
            process.terminate()
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - stopped < 10
        printed = process.stdout.read()
        assert f"Results are saved in {tmp_path}\n" in printed
        # Only lines a user can act on: no library notices, no loading progress bars.
        assert "torchvision" not in printed and "kept in float32" not in printed
        assert "Loading pipeline components" not in printed, printed
    finally:
        process.kill()


@pytest.mark.parametrize("source", ["file", "environment"])
def test_cli_serve_takes_the_token_from_a_file_or_the_environment_out_of_sight_of_ps(models_dir, tmp_path, source):
    token = "tok-" + source * 3
    if source == "file":
        (tmp_path / "token").write_text(token + "\n")
        server = ServerProcess(models_dir, tmp_path, "--token-file", str(tmp_path / "token"))
    else:  # on a public address, which needs a token
        server = ServerProcess(models_dir, tmp_path, "--host", "0.0.0.0", environment={"UNDERPAINT_TOKEN": token})
    with server:
        command_line = " ".join(psutil.Process(server.process.pid).cmdline())
        assert token not in command_line
        with pytest.raises(ServerError) as refused:
            Client(server.url)
        assert refused.value.error.code == "unauthorized"
        with Client(server.url, token=token) as client:
            assert client.models()


def test_cli_serve_refuses_an_unusable_token_file(tmp_path):
    (tmp_path / "empty").write_text("\n")
    for path, reason in ((tmp_path / "empty", "first line is empty"), (tmp_path / "absent", "cannot be read")):
        run = subprocess.run([sys.executable, "-m", "server", "serve", "--token-file", str(path), "--outputs",
                              str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert run.returncode == 2 and reason in run.stderr and "--token-file" in run.stderr


def test_cli_serve_refuses_public_bind_without_token(tmp_path):
    run = subprocess.run([sys.executable, "-m", "server", "serve", "--host", "0.0.0.0", "--outputs", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and "--token" in run.stderr


def test_job_cancelled_reaches_the_client_api(client):
    job = slow_request()
    threading.Timer(1.0, lambda: client.send(Cancel(id=job.id))).start()
    with pytest.raises(JobCancelled):
        client.generate(job)
