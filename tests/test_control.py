"""Control images: ControlNets found and loaded in every layout, control images placed like the picture,
and pictures from the real server in every mode, with regions and live frames; and the errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from server.conditioning import control
from server.conditioning.tile import running_on
from server.config import ServerConfig
from server.imaging.outputs import parameters_text
from server.models.controlnets import load
from server.models.registry import Registry
from shared.client import Client, ServerError
from shared.crop import Rect
from shared.messages import Control, Image, Live
from testing.conditioned import MODES, canvas, pixels, request
from testing.serving import connected, running_server, url
from testing.tiny_controlnets import tiny_controlnet


@pytest.fixture(scope="module")
def client(models_dir: Path, controlnets: Path, tmp_path_factory: pytest.TempPathFactory):
    with connected([models_dir, controlnets], tmp_path_factory.mktemp("server")) as client:
        yield client


# --- finding and loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "format", "family", "kinds", "union"), [
    ("tiny-sd15-scribble", "diffusers", "sd15", ("scribble",), False),
    ("tiny-sd15-canny", "single_file", "sd15", ("canny",), False),
    ("tiny-sd15-depth", "single_file", "sd15", ("depth",), False),
    ("tiny-sdxl-lineart", "single_file", "sdxl", ("lineart",), False),
    ("tiny-sdxl-union", "diffusers", "sdxl", ("canny", "depth", "lineart", "pose", "scribble", "softedge", "tile"),
     True),
])
def test_controlnets_are_identified_in_every_layout(controlnets, name, format, family, kinds, union):
    registry = Registry([controlnets])
    registry.scan()
    entry = registry.get(name, "controlnet")
    assert (entry.format, entry.family, entry.kinds, entry.union) == (format, family, kinds, union)
    assert entry.info().kinds == list(kinds)


def test_a_pickled_controlnet_is_refused_unopened(controlnets):
    registry = Registry([controlnets])
    registry.scan()
    (entry,) = [e for e in registry.entries() if e.name == "old-pose"]
    assert entry.kind == "controlnet" and "pickle" in entry.refused


def test_the_original_layout_loads_to_the_same_weights(controlnets):
    registry = Registry([controlnets])
    registry.scan()
    loaded = load(registry.get("tiny-sd15-depth", "controlnet")).state_dict()
    made = tiny_controlnet("sd15", seed=3).state_dict()
    assert loaded.keys() == made.keys()
    assert all(torch.equal(loaded[key], made[key]) for key in made)


@pytest.mark.parametrize(("name", "kinds"), [
    ("control_v11p_sd15_scribble", ("scribble",)),
    ("control_v11p_sd15_softedge", ("softedge",)),
    ("control_v11p_sd15s2_lineart_anime", ("lineart",)),
    ("controlnet-canny-sdxl-1.0", ("canny",)),
    ("control_v11f1p_sd15_depth", ("depth",)),
    ("control_v11p_sd15_openpose", ("pose",)),
    ("control_v11f1e_sd15_tile", ("tile",)),
    ("control_sd15_hed", ("softedge",)),
    ("t2i-adapter-sketch", ("scribble",)),
    ("my-controlnet", ()),
])
def test_kinds_from_names(name, kinds):
    from server.models.identify import control_kinds

    assert control_kinds(name) == kinds


# --- control images -----------------------------------------------------------------------------------


def rgba(pixels: list[list[tuple[int, int, int, int]]]) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.array(pixels, np.uint8), "RGBA")


@pytest.mark.parametrize(("pixels", "lines"), [
    # Strokes on a transparent layer: their coverage is the line, whatever their colour.
    ([[(0, 0, 0, 255), (0, 0, 0, 0)], [(200, 10, 10, 128), (255, 255, 255, 0)]], [[255, 0], [128, 0]]),
    # Dark lines on light paper: inverted.
    ([[(0, 0, 0, 255), (255, 255, 255, 255)], [(255, 255, 255, 255), (255, 255, 255, 255)]], [[255, 0], [0, 0]]),
    # Light lines on black, as a preprocessor makes them: kept.
    ([[(255, 255, 255, 255), (0, 0, 0, 255)], [(0, 0, 0, 255), (0, 0, 0, 255)]], [[255, 0], [0, 0]]),
])
def test_line_pictures(pixels, lines):
    out = np.asarray(control.line_picture(rgba(pixels)))
    assert (out[..., 0] == np.array(lines)).all() and (out[..., 0] == out[..., 2]).all()


@pytest.mark.parametrize(("at", "frame", "size", "white"), [
    ((0, 0), Rect(0, 0, 8, 8), (8, 8), (0, 0, 4, 4)),  # as it lies
    ((3, 5), Rect(0, 0, 8, 8), (8, 8), (3, 5, 7, 8)),  # an odd offset, cut at the frame's edge
    ((-2, -2), Rect(0, 0, 8, 8), (8, 8), (0, 0, 2, 2)),  # partly left of and above the canvas
    ((10, 10), Rect(8, 8, 8, 8), (16, 16), (4, 4, 12, 12)),  # an inpaint crop, generated at twice its size
    ((100, 100), Rect(0, 0, 8, 8), (8, 8), None),  # outside the frame: black
])
def test_control_images_are_placed_over_the_frame(at, frame, size, white):
    picture = PIL.Image.new("RGB", (4, 4), (255, 255, 255))
    out = np.asarray(control.placed(picture, at, frame, size))[..., 0]
    assert out.shape == (size[1], size[0])
    if white is None:
        assert not out.any()
        return
    # Scaled pictures are resampled smoothly: the box's edge pixels may be grey.
    x0, y0, x1, y1 = white
    grey = 1 if size != (frame.width, frame.height) else 0
    assert (out[y0 + grey:y1 - grey, x0 + grey:x1 - grey] == 255).all()
    outside = np.ones_like(out, bool)
    outside[max(y0 - grey, 0):y1 + grey, max(x0 - grey, 0):x1 + grey] = False
    assert not out[outside].any()


@pytest.mark.parametrize(("start", "end", "steps", "running"), [
    (0.0, 1.0, 4, [0, 1, 2, 3]),
    (0.0, 0.5, 4, [0, 1]),
    (0.5, 1.0, 4, [2, 3]),
    (0.25, 0.75, 4, [1, 2]),
    (0.0, 0.5, 3, [0]),  # a step that ends past `end` does not run
    (0.1, 1.0, 10, list(range(1, 10))),
])
def test_a_control_runs_only_within_its_range(start, end, steps, running):
    item = control.ActiveControl("n", "scribble", None, torch.zeros(1), 1.0, start, end, (8, 8))  # type: ignore[arg-type]
    assert [step for step in range(steps) if item.covers(step, steps)] == running


# --- through the server ---------------------------------------------------------------------------------


def cross() -> Image:
    """A white cross on black, drawn on the canvas at an odd offset."""
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[..., 3] = 255
    pixels[18:22, :, :3] = 255
    pixels[:, 18:22, :3] = 255
    return Image(width=40, height=40, format="rgba8", data=pixels.tobytes(), x=13, y=7)


@pytest.mark.parametrize("mode", MODES)
def test_a_control_changes_the_picture_in_every_mode_and_strength_0_changes_nothing(client, mode):
    fields = MODES[mode]
    kind = "lineart" if mode == "sdxl" else "scribble"
    plain = pixels(client, **fields)
    controlled = pixels(client, **fields, control=[Control(kind=kind, image=cross())])
    assert np.abs(controlled - plain).mean() > 1
    assert (pixels(client, **fields, control=[Control(kind=kind, image=cross())]) == controlled).all()
    assert (pixels(client, **fields, control=[Control(kind=kind, image=cross(), strength=0)]) == plain).all()


def test_inpaint_with_a_control_changes_only_the_selection_and_keeps_its_crop(client):
    fields = MODES["inpaint"] | {"grow": 0, "feather": 0}
    plain = client.generate(request(**fields)).images[0].image
    controlled = client.generate(request(**fields, control=[Control(kind="scribble", image=cross())]))
    layer = controlled.images[0].image
    assert (layer.x, layer.y, layer.width, layer.height) == (plain.x, plain.y, plain.width, plain.height)
    a, b = (np.frombuffer(i.data, np.uint8).reshape(i.height, i.width, 4).astype(int) for i in (plain, layer))
    assert (a[..., 3] == b[..., 3]).all()
    changed = np.abs(a - b)[..., :3].max(axis=-1) > 0
    assert changed.any() and not changed[a[..., 3] == 0].any()


def test_a_range_and_several_controls_each_change_the_picture(client):
    whole = pixels(client, control=[Control(kind="scribble", image=cross())])
    half = pixels(client, control=[Control(kind="scribble", image=cross(), end=0.5)])
    both = pixels(client, control=[Control(kind="scribble", image=cross()),
                                   Control(kind="canny", image=cross(), strength=0.5)])
    assert np.abs(whole - half).mean() > 0.5
    assert np.abs(whole - both).mean() > 0.5


def test_a_union_controlnet_serves_the_kinds_that_have_no_model_of_their_own(client):
    result = client.generate(request(model="tiny-sdxl", control=[Control(kind="pose", image=cross()),
                                                                  Control(kind="lineart", image=cross())]))
    assert [c["model"] for c in result.info["controls"]] == ["tiny-sdxl-union", "tiny-sdxl-lineart"]
    assert 'ControlNet 0: "Module: none, Model: tiny-sdxl-union, Weight: 1.0' in parameters_text(result.info, 3)


def test_a_live_frame_with_a_control(client):
    frame = Live(id=uuid.uuid4().hex, session="s", mode="img2img", model="tiny-sd15", prompt="a red circle",
                 image=canvas(), strength=0.5, steps=4, seed=1, control=[Control(kind="scribble", image=cross())])
    result = client.generate(frame)
    assert result.info["controls"][0]["model"] == "tiny-sd15-scribble"


@pytest.mark.parametrize(("fields", "code", "field"), [
    ({"control": [Control(kind="pose", image=cross())]}, "unsupported", "control[0].kind"),
    ({"control": [Control(kind="scribble", image=cross(), model="nope")]}, "unknown_model", "control[0].model"),
    ({"control": [Control(kind="scribble", image=cross(), model="tiny-sdxl-lineart")]}, "unsupported",
     "control[0].kind"),
    ({"control": [Control(kind="lineart", image=cross(), model="tiny-sdxl-lineart")]}, "unsupported",
     "control[0].model"),
    ({"control": [Control(kind="scribble", image=cross(), start=0.6, end=0.4)]}, "bad_request", "control[0].end"),
    ({"mode": "upscale", "image": canvas(), "control": [Control(kind="scribble", image=cross())]}, "bad_request",
     "control"),  # an upscale without a refine has nothing for controls to steer
])
def test_errors_name_the_control(client, fields, code, field):
    with pytest.raises(ServerError) as caught:
        client.generate(request(**fields))
    assert (caught.value.error.code, caught.value.error.field) == (code, field)


# --- preprocess -------------------------------------------------------------------------------------------


def square_painting(outline: bool = False, side: int = 32) -> np.ndarray:
    """A dark square on light paper, filled (edges along its sides) or outlined 2 px wide (lines there)."""
    rgb = np.full((side, side, 3), 230, np.uint8)
    rgb[8:24, 8:24] = 40
    if outline:
        rgb[10:22, 10:22] = 230
    return rgb


@pytest.mark.parametrize("kind", ["canny", "softedge", "scribble", "lineart"])
def test_preprocessors_draw_light_lines_on_black_where_the_picture_has_edges(kind):
    from server.imaging.preprocess import PREPROCESSORS

    out = PREPROCESSORS[kind](square_painting(outline=kind == "lineart"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    grey = out[..., 0].astype(int)
    edge = grey[6:26, 7:10].mean() + grey[7:10, 6:26].mean()  # the square's left and top sides
    assert edge > 2 * 60
    assert grey[0:4, 0:4].max() == 0 and grey[14:18, 14:18].max() == 0  # flat paper, flat inside


def test_a_flat_picture_gives_a_black_control_image():
    from server.imaging.preprocess import PREPROCESSORS

    flat = np.full((16, 16, 3), 128, np.uint8)
    assert all(not PREPROCESSORS[kind](flat).any() for kind in PREPROCESSORS)


def test_preprocess_through_the_server_answers_at_the_pictures_place(client):
    from shared.messages import Preprocess

    rgba = np.dstack([square_painting(), np.full((32, 32), 255, np.uint8)])
    image = Image(width=32, height=32, format="rgba8", data=rgba.tobytes(), x=5, y=-3)
    result = client.generate(Preprocess(id=uuid.uuid4().hex, kind="canny", image=image))
    (made,) = result.images
    assert (made.image.x, made.image.y, made.image.width, made.image.height) == (5, -3, 32, 32)
    assert result.info["preprocess"] == "canny"
    assert np.frombuffer(made.image.data, np.uint8).reshape(32, 32, 4)[..., 0].any()


def test_preprocess_errors_name_the_field(client):
    from shared.messages import Preprocess

    with pytest.raises(ServerError) as caught:
        client.generate(Preprocess(id=uuid.uuid4().hex, kind="tile", image=cross()))  # type: ignore[arg-type]
    assert (caught.value.error.code, caught.value.error.field) == ("bad_request", "kind")
    short = Image(width=8, height=8, format="rgba8", data=b"\0" * 10)
    with pytest.raises(ServerError) as caught:
        client.generate(Preprocess(id=uuid.uuid4().hex, kind="canny", image=short))
    assert (caught.value.error.code, caught.value.error.field) == ("bad_request", "image.data")


def test_a_slow_preprocess_does_not_hold_up_the_connections_other_messages(models_dir, controlnets, tmp_path,
                                                                         monkeypatch):
    import threading

    from server.imaging.preprocess import PREPROCESSORS
    from shared.messages import Error, ListModels, ModelList, Preprocess, Result
    from testing.raw_client import RawClient

    release = threading.Event()
    canny = PREPROCESSORS["canny"]

    def slow(rgb: np.ndarray) -> np.ndarray:  # a depth or pose model on a CPU
        release.wait(30)
        return canny(rgb)

    monkeypatch.setitem(PREPROCESSORS, "canny", slow)
    config = ServerConfig(models=[models_dir, controlnets], outputs=tmp_path / "outputs")
    with running_server(config) as server:
        raw = RawClient(url(server))
        raw.hello()
        raw.send(Preprocess(id="slow", kind="canny", image=cross()))
        raw.send(Preprocess(id="second", kind="canny", image=cross()))
        raw.send(ListModels())
        busy, listed = raw.receive(), raw.receive()
        assert isinstance(busy, Error) and (busy.code, busy.id, busy.field) == ("busy", "second", "type")
        assert isinstance(listed, ModelList)  # answered while the preprocess still runs
        release.set()
        result = raw.receive()
        assert isinstance(result, Result) and result.id == "slow"
        raw.close()


def test_a_preprocess_that_fails_unexpectedly_answers_internal_with_its_id_and_the_server_goes_on(client, monkeypatch):
    from server.imaging.preprocess import PREPROCESSORS
    from shared.messages import Preprocess

    def broken(rgb: np.ndarray) -> np.ndarray:
        raise RuntimeError("a bug in a preprocessor")

    monkeypatch.setitem(PREPROCESSORS, "canny", broken)
    asked = Preprocess(id=uuid.uuid4().hex, kind="canny", image=cross())
    with pytest.raises(ServerError) as caught:
        client.generate(asked, timeout=30)  # without its id the client would wait for ever
    assert (caught.value.error.code, caught.value.error.id) == ("internal", asked.id)
    assert "bug" not in caught.value.error.message
    monkeypatch.undo()
    assert client.generate(Preprocess(id=uuid.uuid4().hex, kind="canny", image=cross())).images


@pytest.mark.slow
def test_a_full_size_sd15_controlnet_in_the_original_fp16_layout_loads_with_the_shipped_config(tmp_path):
    """What the installer's `control` set places: lllyasviel's layout, float16, no config beside it."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    from server.models.identify import identify_file
    from server.models.loading import CONFIGS
    from testing.tiny_controlnets import original_layout

    torch.manual_seed(0)
    net = ControlNetModel.from_unet(UNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(CONFIGS / "sd15" / "unet")))
    path = tmp_path / "control_v11p_sd15_scribble_fp16.safetensors"
    save_file({key: value.half() for key, value in original_layout(net).items()}, str(path))
    entry = identify_file(path, "controlnet")
    assert (entry.kind, entry.family, entry.kinds, entry.refused) == ("controlnet", "sd15", ("scribble",), None)
    loaded, made = load(entry).state_dict(), net.state_dict()
    assert loaded.keys() == made.keys()
    assert all(torch.equal(loaded[key], made[key].half().float()) for key in made)


def test_with_full_detail_the_controls_shape_the_native_picture_the_refine_keeps(client):
    fields = {"width": 320, "height": 256, "fit_native": True, "detail": "full", "steps": 3}
    line = Image(width=320, height=256, format="rgba8", data=bytes(320 * 256 * 4), x=0, y=0)
    plain = client.generate(request(**fields))
    controlled = client.generate(request(**fields, control=[Control(kind="scribble", image=cross())]))
    empty = client.generate(request(**fields, control=[Control(kind="scribble", image=line, strength=0)]))
    assert controlled.info["detail"] == "full" and controlled.info["controls"][0]["model"] == "tiny-sd15-scribble"
    assert controlled.images[0].image.data != plain.images[0].image.data
    assert empty.images[0].image.data == plain.images[0].image.data


def test_the_demo_model_takes_only_its_own_controlnets(controlnets):
    """The demo model's UNet is its own: an installed SD1.5 ControlNet of the same kind would not fit it."""
    from server.errors import Unsupported
    from server.models.controlnets import ControlNets

    registry = Registry([controlnets])  # no usable checkpoint: the demo model is served
    registry.scan()
    (demo,) = registry.checkpoints()
    chooser = ControlNets(registry, torch.device("cpu"), torch.float32)
    assert demo.embedded and chooser.choose("scribble", demo, None, "control[0]").name == "underpaint-demo-scribble"
    with pytest.raises(Unsupported) as caught:
        chooser.choose("canny", demo, None, "control[0]")  # tiny-sd15-canny is SD1.5's, not the demo's
    assert caught.value.field == "control[0].kind"
    with pytest.raises(Unsupported) as caught:
        chooser.choose("scribble", demo, "tiny-sd15-scribble", "control[0]")
    assert caught.value.field == "control[0].model"


def test_a_depth_map_comes_from_the_installed_depth_model(client):
    from shared.messages import Preprocess

    rgba = np.dstack([square_painting(), np.full((32, 32), 255, np.uint8)])
    image = Image(width=32, height=32, format="rgba8", data=rgba.tobytes(), x=2, y=3)
    result = client.generate(Preprocess(id=uuid.uuid4().hex, kind="depth", image=image))
    again = client.generate(Preprocess(id=uuid.uuid4().hex, kind="depth", image=image))
    made = result.images[0].image
    assert (made.x, made.y, made.width, made.height) == (2, 3, 32, 32)
    assert result.info["model"] == "tiny-depth-anything"
    grey = np.frombuffer(made.data, np.uint8).reshape(32, 32, 4)[..., 0]
    assert grey.min() == 0 and grey.max() == 255  # spread over the whole range, near white
    assert made.data == again.images[0].image.data


def test_without_a_depth_model_depth_is_unsupported(tmp_path):
    from server.errors import Unsupported
    from server.models.annotators.kept import Annotators

    with pytest.raises(Unsupported) as caught:
        Annotators([tmp_path], torch.device("cpu"), torch.float32).depth(square_painting())
    assert caught.value.field == "kind"


@pytest.mark.parametrize(("start", "end", "runs"), [(0.0, 1.0, 4), (0.0, 0.5, 2), (0.5, 1.0, 2), (0.3, 0.6, 0)])
def test_a_controlnet_is_not_run_outside_its_range(start, end, runs):
    from diffusers import EulerDiscreteScheduler

    from testing.tiny_models import tiny_pipeline

    pipe = tiny_pipeline("sd15")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # one UNet call a step
    pipe.set_progress_bar_config(disable=True)
    net = tiny_controlnet("sd15")
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    hint = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    controls = control.Controls([control.ActiveControl("n", "scribble", net, hint, 1.0, start, end, (8, 8))])
    with control.applied(pipe, controls):
        pipe("a red circle", width=64, height=64, num_inference_steps=4, guidance_scale=7.0,
             callback_on_step_end=controls.on_step_end, output_type="latent")
    assert len(calls) == runs  # one call a step: classifier-free guidance runs as one batch


def test_a_controlnet_that_cannot_be_loaded_is_an_error_naming_it_and_the_server_goes_on(models_dir, controlnets,
                                                                                           tmp_path):
    import shutil

    folder = tmp_path / "more" / "controlnet"
    folder.mkdir(parents=True)
    shutil.copy(controlnets / "controlnet" / "tiny-sd15-canny.safetensors", folder / "broken-canny.safetensors")
    # Its config is the SDXL ControlNet's: the weights do not fit it.
    shutil.copytree(controlnets / "controlnet" / "tiny-sdxl-lineart.config", folder / "broken-canny.config")
    config = ServerConfig(models=[models_dir, tmp_path / "more"], outputs=tmp_path / "outputs")
    with running_server(config) as server, Client(url(server)) as artist:
        with pytest.raises(ServerError) as caught:
            artist.generate(request(control=[Control(kind="canny", image=cross(), model="broken-canny")]))
        assert (caught.value.error.code, caught.value.error.field) == ("model_broken", "control[0].model")
        assert artist.generate(request()).images


@pytest.mark.parametrize(("latent", "tile", "box", "expected"), [
    ((8, 6), None, None, (0, 48, 0, 64)),  # the picture it was placed for: all of the image
    ((4, 4), (8, 6), Rect(2, 1, 4, 4), (8, 40, 16, 48)),  # a tile of it: the image under the tile, 8 px a latent
    ((4, 4), (8, 6), Rect(4, 2, 4, 4), (16, 48, 32, 64)),  # the last tile, at the far corner
    ((4, 4), None, None, None),  # another picture (a refine at another size): none
    ((4, 4), (16, 12), Rect(0, 0, 4, 4), None),  # a tile of another picture: none
])
def test_a_control_gives_the_part_of_its_image_under_a_tile(latent, tile, box, expected):
    hint = torch.arange(48 * 64, dtype=torch.int32).reshape(1, 1, 48, 64).expand(1, 3, 48, 64)
    item = control.ActiveControl("n", "tile", None, hint, 1.0, 0.0, 1.0, (8, 6))  # type: ignore[arg-type]
    sample = torch.zeros(1, 4, latent[1], latent[0])
    if tile is None:
        found = item.hint_for(sample)
    else:
        with running_on(box, height=tile[1], width=tile[0]):
            found = item.hint_for(sample)
    if expected is None:
        assert found is None
    else:
        top, bottom, left, right = expected
        assert torch.equal(found, hint[..., top:bottom, left:right])
    assert item.hint_for(torch.zeros(1, 4, 3, 3)) is None  # the tile is gone after the block


def test_in_tiles_each_controlnet_call_reads_the_image_under_its_tile():
    from server.modes.tiled import tiled_unet
    from shared.tiles import grid
    from testing.tiny_models import tiny_pipeline

    pipe = tiny_pipeline("sd15")
    pipe._num_timesteps = 1
    net = tiny_controlnet("sd15")
    seen: list[torch.Tensor] = []
    net.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["controlnet_cond"]), with_kwargs=True)
    hint = torch.randint(0, 256, (1, 3, 96, 128), dtype=torch.uint8)
    controls = control.Controls([control.ActiveControl("n", "tile", net, hint, 1.0, 0.0, 1.0, (16, 12))])
    sample = torch.randn(1, 4, 12, 16)
    context = torch.randn(1, 77, pipe.unet.config.cross_attention_dim)
    with torch.inference_mode(), control.applied(pipe, controls), tiled_unet(pipe.unet, 8):
        pipe.unet(sample, 999, encoder_hidden_states=context)
    boxes = grid(16, 12, 8, 2)
    assert len(seen) == len(boxes) > 1
    for cond, box in zip(seen, boxes, strict=True):
        assert torch.equal(cond, hint[..., box.y * 8:box.bottom * 8, box.x * 8:box.right * 8].float() / 255)


def test_an_upscale_refine_follows_its_controls_tile_by_tile(client):
    side = 160  # enlarged to 320 px: 2 x 2 tiles of the tiny model's native 256 px
    picture = Image(width=side, height=side, format="rgba8", data=bytes(range(256)) * (side * side * 4 // 256))
    fields = {"mode": "upscale", "image": picture, "scale": 2, "strength": 0.5, "steps": 4}
    plain = client.generate(request(**fields))
    controlled = client.generate(request(**fields, control=[Control(kind="scribble", image=cross())]))
    again = client.generate(request(**fields, control=[Control(kind="scribble", image=cross())]))
    empty = client.generate(request(**fields, control=[Control(kind="scribble", image=picture, strength=0)]))
    layer = controlled.images[0].image
    assert (layer.width, layer.height) == (2 * side, 2 * side)
    assert controlled.info["controls"][0]["model"] == "tiny-sd15-scribble"
    assert 'ControlNet 0: "Module: none, Model: tiny-sd15-scribble' in parameters_text(controlled.info, 3)
    assert layer.data != plain.images[0].image.data and layer.data == again.images[0].image.data
    assert empty.images[0].image.data == plain.images[0].image.data
