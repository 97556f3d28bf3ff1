"""Protocol v1 in shared/: codec round trips and validation, table-driven."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from shared import codec, messages
from shared.errors import ProtocolError
from shared.png import png_size

ROOT = Path(__file__).resolve().parents[1]


def frame(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


GENERATE = {"type": "generate", "id": "job-1", "mode": "txt2img", "model": "m", "prompt": "a cat"}
IMAGE = {"width": 2, "height": 2, "format": "rgba8", "data": bytes(16)}
MASK = {"width": 2, "height": 2, "format": "a8", "data": bytes(4)}


@pytest.mark.parametrize("message", [
    messages.Hello(protocol=1, client="test", token="secret"),
    messages.ListModels(),
    messages.Generate(id="a", mode="img2img", model="m", image=messages.Image(2, 2, "rgba8", bytes(16), x=5, y=-3),
                      strength=0.5, seed=2**40),
    messages.Generate(id="b", mode="inpaint", model="m", image=messages.Image(2, 2, "rgba8", bytes(16)),
                      mask=messages.Mask(1, 1, "a8", b"\xff", x=1, y=1), fill="expand", grow=3, feather=4),
    messages.Generate(id="c", mode="txt2img", model="m", reference=[
        messages.Reference(image=messages.Image(2, 2, "rgba8", bytes(16), x=3), mode="style", strength=0.4,
                           start=0.1, end=0.9, mask=messages.Mask(1, 1, "a8", b"\xff"), model="ip")]),
    messages.Cancel(id="a"),
    messages.Live(id="a", session="s", mode="img2img", model="m", image=messages.Image(1, 1, "rgba8", bytes(4))),
    messages.LiveStop(session="s"),
])
def test_client_messages_round_trip(message):
    assert codec.decode_client(codec.encode(message)) == message


@pytest.mark.parametrize("message", [
    messages.Welcome(server="s", device="cpu", models=[messages.ModelInfo(name="m", kind="checkpoint")],
                     schedulers=["euler"], limits=messages.Limits(max_batch=2)),
    messages.Queued(id="a", position=3),
    messages.Progress(id="a", step=1, total=2, preview=messages.Image(1, 1, "rgba8", bytes(4))),
    messages.Result(id="a", images=[messages.ResultImage(messages.Image(1, 1, "png", b"x"), seed=1)],
                    info={"steps": 2}, elapsed=0.5),
    messages.Cancelled(id="a", reason="superseded"),
    messages.Error(code="bad_request", message="no", id="a", field="steps"),
    messages.LiveStopped(session="s"),
])
def test_server_messages_round_trip(message):
    assert codec.decode_server(codec.encode(message)) == message


BAD = [
    # (frame, code, field)
    ("a text frame", "bad_request", "frame"),
    (b"\xc1", "bad_request", "frame"),
    (msgpack.packb([1, 2]), "bad_request", "frame"),
    (frame(kind="hello"), "bad_request", "type"),
    (frame(type="shutdown"), "bad_request", "type"),
    (frame(type="hello", client="x"), "bad_request", "protocol"),
    (frame(type="hello", protocol="1", client="x"), "bad_request", "protocol"),
    (frame(type="hello", protocol=True, client="x"), "bad_request", "protocol"),
    (frame(**{**GENERATE, "steps": 0}), "bad_request", "steps"),
    (frame(**{**GENERATE, "steps": 151}), "bad_request", "steps"),
    (frame(**{**GENERATE, "steps": 2.5}), "bad_request", "steps"),
    (frame(**{**GENERATE, "cfg_scale": "high"}), "bad_request", "cfg_scale"),
    (frame(**{**GENERATE, "cfg_scale": float("nan")}), "bad_request", "cfg_scale"),
    (frame(**{**GENERATE, "strength": 1.5}), "bad_request", "strength"),
    (frame(**{**GENERATE, "seed": -1}), "bad_request", "seed"),
    (frame(**{**GENERATE, "mode": "paint"}), "bad_request", "mode"),
    (frame(**{**GENERATE, "prompt": 5}), "bad_request", "prompt"),
    (frame(**{**GENERATE, "prompt": "x" * 30_000}), "too_large", "prompt"),
    (frame(**{**GENERATE, "batch_size": 9}), "too_large", "batch_size"),
    (frame(**{**GENERATE, "width": 8192}), "too_large", "width"),
    (frame(**{k: v for k, v in GENERATE.items() if k != "model"}), "bad_request", "model"),
    (frame(**{**GENERATE, "mode": "img2img"}), "bad_request", "image"),
    (frame(**{**GENERATE, "mode": "img2img", "image": IMAGE, "strength": 0.01}), "bad_request", "strength"),
    (frame(**{**GENERATE, "mode": "inpaint", "image": IMAGE}), "bad_request", "mask"),
    (frame(**{**GENERATE, "mode": "img2img", "image": {**IMAGE, "data": bytes(15)}}), "bad_request", "image.data"),
    (frame(**{**GENERATE, "mode": "img2img", "image": {**IMAGE, "format": "jpeg"}}), "bad_request", "image.format"),
    (frame(**{**GENERATE, "mode": "img2img", "image": {**IMAGE, "format": "png"}}), "bad_request", "image.data"),
    (frame(**{**GENERATE, "mode": "img2img", "image": {**IMAGE, "width": 5000}}), "too_large", "image.width"),
    (frame(**{**GENERATE, "mode": "img2img", "image": {**IMAGE, "width": 0}}), "bad_request", "image.width"),
    (frame(**{**GENERATE, "mode": "img2img", "image": "pixels"}), "bad_request", "image"),
    (frame(**{**GENERATE, "mode": "inpaint", "image": IMAGE, "mask": {**MASK, "data": bytes(16)}}),
     "bad_request", "mask.data"),
    (frame(**{**GENERATE, "regions": [{"prompt": "x"}]}), "bad_request", "regions[0].mask"),
    (frame(**{**GENERATE, "regions": "x"}), "bad_request", "regions"),
    (frame(**{**GENERATE, "reference": [{"mode": "style"}]}), "bad_request", "reference[0].image"),
    (frame(**{**GENERATE, "reference": [{"image": IMAGE, "mode": "vibe"}]}), "bad_request", "reference[0].mode"),
    (frame(**{**GENERATE, "reference": [{"image": IMAGE, "strength": 1.5}]}), "bad_request", "reference[0].strength"),
    (frame(**{**GENERATE, "reference": [{"image": IMAGE, "start": 0.5, "end": 0.5}]}), "bad_request",
     "reference[0].end"),
    (frame(**{**GENERATE, "reference": [{"image": IMAGE, "mask": {**MASK, "data": bytes(3)}}]}), "bad_request",
     "reference[0].mask.data"),
    (frame(**{**GENERATE, "reference": [{"image": IMAGE}] * 5}), "too_large", "reference"),
    (frame(type="cancel"), "bad_request", "id"),
    (frame(type="cancel", id="x" * 200), "too_large", "id"),
    (frame(type="live", id="a", mode="img2img", model="m", image=IMAGE), "bad_request", "session"),
    (frame(type="generate", id={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {
        "m": {"n": {"o": {"p": {"q": 1}}}}}}}}}}}}}}}}}), "bad_request", "frame"),
]


@pytest.mark.parametrize(("data", "code", "field"), BAD, ids=[f"{c}-{f}-{i}" for i, (_, c, f) in enumerate(BAD)])
def test_bad_frames_name_the_field(data, code, field):
    with pytest.raises(ProtocolError) as caught:
        codec.decode_client(data)
    assert (caught.value.code, caught.value.field) == (code, field)
    assert field.split(".")[0].split("[")[0] in caught.value.message or field in ("frame", "type")


def test_errors_echo_the_request_id():
    with pytest.raises(ProtocolError) as caught:
        codec.decode_client(frame(**{**GENERATE, "steps": 0}))
    assert caught.value.id == "job-1"
    error = codec.error_message(caught.value)
    assert (error.id, error.code, error.field) == ("job-1", "bad_request", "steps")


def test_unknown_fields_are_ignored_for_forward_compatibility():
    message = codec.decode_client(frame(**GENERATE, future_option=3))
    assert message.prompt == "a cat"


def test_limits_are_configurable():
    small = replace(messages.Limits(), max_side=1)
    with pytest.raises(ProtocolError) as caught:
        codec.decode_client(frame(**{**GENERATE, "mode": "img2img", "image": IMAGE}), small)
    assert caught.value.code == "too_large"


def test_png_size():
    import io

    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.new("RGB", (37, 301)).save(buffer, format="PNG")
    assert png_size(buffer.getvalue()) == (37, 301)
    with pytest.raises(ValueError):
        png_size(b"GIF89a....")


def test_shared_runs_without_numpy_or_torch(tmp_path):
    """The Krita plugin imports shared/ inside Krita's Python: msgpack is all it may need."""
    import msgpack as installed

    shutil.copytree(Path(installed.__file__).parent, tmp_path / "msgpack")
    code = (
        "import sys, importlib, pkgutil, shared\n"
        "for m in pkgutil.iter_modules(shared.__path__): importlib.import_module('shared.' + m.name)\n"
        "from shared import codec, messages\n"
        "f = codec.encode(messages.Cancel(id='x'))\n"
        "assert codec.decode_client(f) == messages.Cancel(id='x')\n"
        "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    run = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_welcome_of_a_large_library_with_kinds_this_client_does_not_know() -> None:
    """A user's library of hundreds of LoRAs, and a kind a newer server lists, still decode."""
    models = [messages.ModelInfo(name=f"lora {i}", kind="lora", family="sd15") for i in range(300)]
    models.append(messages.ModelInfo(name="scribble", kind="controlnet", family="sd15"))
    welcome = messages.Welcome(server="s", device="cpu", models=models, schedulers=["euler"])
    decoded = codec.decode_server(codec.encode(welcome))
    assert decoded.models == models and decoded.limits == messages.Limits()
    assert [m.name for m in decoded.models if m.usable_checkpoint] == []


def test_lenient_decoding_keeps_the_good_fields_and_names_the_bad_ones() -> None:
    """For files a person edits (a model's settings, a style): one bad value costs only itself; a
    mandatory field that is bad or missing still refuses the whole."""
    from shared.schema import from_wire_lenient

    found, problems = from_wire_lenient(messages.ModelDefaults, {"steps": 0, "cfg_scale": 3, "scheduler": 5,
                                                                 "later": "a newer field"})
    assert found == messages.ModelDefaults(cfg_scale=3.0)
    assert [(p.field, p.code) for p in problems] == [("steps", "bad_request"), ("scheduler", "bad_request")]
    for bad in ({"protocol": 1, "client": "x" * 5000}, {"protocol": 1}):
        with pytest.raises(ProtocolError) as error:
            from_wire_lenient(messages.Hello, bad)
        assert error.value.field == "client"
    with pytest.raises(ProtocolError, match="must be a map"):
        from_wire_lenient(messages.ModelDefaults, [1, 2])
