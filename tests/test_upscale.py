"""Large canvases: the tiled run, upscaler models and their files, the upscale job and full-detail
generate through the real server on loopback (docs/upscale.md)."""

from __future__ import annotations

import pickle
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch

from server.config import ServerConfig
from server.imaging import latents, tiles
from server.models import upscalers
from server.models.registry import Registry
from shared.client import Client, ServerError
from shared.errors import TOO_LARGE
from shared.messages import Cancel, Cancelled, Generate, Image, Limits, Progress
from testing.serving import running_server, url
from testing.tiny_models import tiny_pipeline
from testing.tiny_upscalers import tiny_esrgan, write_tiny_upscalers


@pytest.fixture(scope="module")
def upscaler_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upscalers")


@pytest.fixture(scope="module")
def upscaler_files(upscaler_dir: Path) -> dict[str, Path]:
    return write_tiny_upscalers(upscaler_dir)


@pytest.fixture(scope="module")
def upscaling(models_dir: Path, upscaler_files: dict[str, Path], upscaler_dir: Path,
              tmp_path_factory: pytest.TempPathFactory):
    """A client of a server with the tiny checkpoints and the tiny upscalers."""
    config = ServerConfig(models=[models_dir, upscaler_dir], outputs=tmp_path_factory.mktemp("outputs"))
    with running_server(config) as server, Client(url(server), name="test") as client:
        yield client


def picture(width: int, height: int, seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image(width=width, height=height, format="rgba8", x=0, y=0,
                 data=np.dstack([rgb, np.full((height, width), 255, np.uint8)]).tobytes())


def pixels(image: Image) -> np.ndarray:
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)


def request(**fields) -> Generate:
    defaults = {"id": uuid.uuid4().hex, "mode": "upscale", "model": "tiny-sd15", "image": picture(48, 40),
                "scale": 2, "seed": 1, "steps": 4}
    return Generate(**{**defaults, **fields})


# --- the tiled run ------------------------------------------------------------------------------


@pytest.mark.parametrize("fit", [False, True])
@pytest.mark.parametrize(("tile", "overlap", "feather"), [(16, 4, 4), (16, 0, 0), (7, 3, 3), (64, 8, 8), (5, 4, 1)])
def test_blending_tiles_of_an_exact_function_changes_nothing(tile: int, overlap: int, feather: int, fit: bool) -> None:
    """A function that works pixel by pixel gives the same picture whole or in tiles: the weights are
    normalised everywhere, and every output row is handed on once, also with tiles fitted each way. In
    8 bits, a value a float rounding away from half a level may round the other way."""
    x = torch.rand(2, 3, 50, 77, generator=torch.Generator().manual_seed(tile * 100 + overlap * 10 + feather))
    assert torch.allclose(tiles.blended(x, lambda part: part * 2, tile, overlap, feather, fit=fit), x * 2, atol=1e-6)
    enlarged = tiles.pictures(x, lambda part: torch.nn.functional.interpolate(part, scale_factor=3), tile, overlap,
                              feather, 3, fit=fit)
    exact = (torch.nn.functional.interpolate(x, scale_factor=3) * 255).permute(0, 2, 3, 1).numpy()
    # The blend is exact to float rounding, which may tip a level that lies on a half either way.
    off = enlarged != exact.round()
    assert enlarged.shape == exact.shape and np.all(np.abs(enlarged[off] - exact[off]) <= 0.5 + 1e-4)


def test_tiles_are_reported_in_order_before_they_run() -> None:
    told: list[tuple[int, int]] = []
    tiles.blended(torch.zeros(1, 1, 30, 30), lambda part: part, 16, 4, 4, lambda i, n: told.append((i, n)))
    assert told == [(i, 9) for i in range(9)]  # 3 x 3 tiles: two would overlap by 2 only


def test_a_tiled_upscaler_matches_it_whole() -> None:
    """Overlap and feather hide the tiles: the tiny ESRGAN's output in tiles is within a few levels of
    its output on the whole picture (its receptive field is wider than the overlap, so not exact)."""
    net = tiny_esrgan(4)
    x = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        whole = (net(x).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy()
        tiled = tiles.pictures(x, net, 16, 6, 6, 4)[0].astype(np.float32)
    difference = np.abs(tiled - whole)
    assert difference.mean() < 1.0 and np.percentile(difference, 99) < 8, (difference.mean(), difference.max())


def vae_of(channels: tuple[int, ...], attention: bool, dtype: torch.dtype) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(block_out_channels=channels, mid_block_add_attention=attention),
                           dtype=dtype)


VAE_TILES = [
    # VAE (first block's channels ... , mid-block attention, dtype), its tiles' side at the default budget
    (vae_of((128, 256, 512, 512), True, torch.float32), 576),  # SD1.5's and SDXL's: activations bind
    (vae_of((128, 256, 512, 512), True, torch.float16), 832),
    (vae_of((4, 4, 8, 8), True, torch.float32), 1024),  # the tiny test VAE: its attention binds
    (vae_of((16, 32, 64, 64), False, torch.float32), 1664),  # the demo model's, without attention
]


@pytest.mark.parametrize(("vae", "side"), VAE_TILES)
def test_the_vae_is_whole_while_its_activations_and_attention_fit_the_budget(vae: SimpleNamespace, side: int) -> None:
    """The VAE's attention holds a score for every pair of latent pixels: on a VAE with a shallow first
    block it, not the activations, decides how large a picture is worked whole."""
    assert latents.tile_side(vae) == side
    assert not latents.tiled_vae_needed(vae, side, side) and latents.tiled_vae_needed(vae, side + 64, side + 64)
    assert latents.working_bytes(vae, side, side) <= latents.VAE_BUDGET


def test_the_tiny_vae_is_bound_by_its_attention() -> None:
    vae = tiny_pipeline("sd15").vae
    assert latents.tile_side(vae) == 1024 and latents.working_bytes(vae, 1024, 1024) == (128 * 128) ** 2 * 4


@pytest.fixture
def small_vae_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A VAE budget that makes the tiny VAE (4 channels, float32: 96 bytes a pixel) work in 128² tiles."""
    monkeypatch.setattr(latents, "VAE_BUDGET", 128 * 128 * 96)


def test_the_vae_in_tiles_is_as_close_to_it_whole_as_diffusers_tiling(small_vae_budget: None) -> None:
    """A VAE's group norms see one tile's statistics, so no tiling is exact; ours, in bands of 8-bit
    rows, strays from the whole decode no more than diffusers' own tiling (which holds float tiles)."""
    vae = tiny_pipeline("sd15").vae
    z = torch.randn(1, 4, 40, 40, generator=torch.Generator().manual_seed(0))
    assert latents.tiled_vae_needed(vae, 320, 320) and not latents.tiled_vae_needed(vae, 128, 128)
    assert latents.tile_side(vae) == 128

    def levels(decoded: torch.Tensor) -> np.ndarray:
        return ((decoded / 2 + 0.5).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy()

    (tiled,) = latents.decode_in_tiles(vae, z)
    with torch.no_grad():
        whole = levels(vae.decode(z / vae.config.scaling_factor).sample)
        with latents.tiled_vae(vae, 320, 320):
            theirs = levels(vae.decode(z / vae.config.scaling_factor).sample)
    assert tiled.size == (320, 320) and not vae.use_tiling
    ours = np.abs(np.asarray(tiled, np.float32) - whole).mean()
    assert ours <= np.abs(theirs - whole).mean(), (ours, np.abs(theirs - whole).mean())


def test_the_vae_encodes_in_tiles_as_closely_as_diffusers_tiling(small_vae_budget: None) -> None:
    pipe = tiny_pipeline("sd15")
    small, large = (PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), np.uint8))
                    for side in (128, 320))
    assert torch.allclose(latents.encode_in_tiles(pipe, small), latents.encode(pipe, small), atol=1e-5)  # one tile
    whole = latents.encode(pipe, large)
    with latents.tiled_vae(pipe.vae, 320, 320):
        theirs = latents.encode(pipe, large)
    ours = latents.encode_in_tiles(pipe, large)
    assert ours.shape == whole.shape == (1, 4, 40, 40)
    assert (ours - whole).abs().mean() <= (theirs - whole).abs().mean()


# --- upscaler files ------------------------------------------------------------------------------


def test_upscalers_are_found_in_both_layouts_with_their_scale(upscaler_files: dict[str, Path],
                                                              upscaler_dir: Path) -> None:
    registry = Registry([upscaler_dir])
    registry.scan()
    found = {e.name: (e.scale, e.refused) for e in registry.entries() if e.kind == "upscaler"}
    assert found == {
        "tiny-esrgan-4x": (4, None),  # upscale_models/, .safetensors
        "tiny-swinir-2x": (2, None),  # upscale_models/, .pth
        "tiny-esrgan-2x": (2, None),  # ESRGAN/ (A1111), .pth in BasicSR's params_ema wrapper
        "armed": (None, upscalers.refusal(pickle.UnpicklingError())),
        "not-an-upscaler": (None, "not an upscaler architecture this server knows"),
    }
    assert registry.get("tiny-swinir-2x", "upscaler").info().scale == 2


def test_an_armed_pth_is_refused_and_never_runs(upscaler_files: dict[str, Path]) -> None:
    """The file runs code when fully unpickled (here: divides by zero); the server reads it with
    weights_only, which refuses it before anything in it runs."""
    armed = upscaler_files["armed"]
    with pytest.raises(ZeroDivisionError):
        torch.load(armed, weights_only=False)  # what a full unpickle would do
    # A ZeroDivisionError from the file would be refused too, so the proof is the loader's own refusal.
    with pytest.raises(pickle.UnpicklingError, match="truediv"):
        upscalers.read_weights(armed)
    entry = upscalers.identify(armed)
    assert entry.refused and "pickled objects" in entry.refused


def test_spandrel_loads_without_torchvision() -> None:
    """requirements/excludes.txt leaves torchvision out: spandrel is imported without it, and leaves
    no stand-in behind for transformers or diffusers to find."""
    import importlib.util
    import sys

    upscalers._spandrel()
    assert "spandrel" in sys.modules
    if importlib.util.find_spec("torchvision") is None:
        assert not any(name.startswith("torchvision") for name in sys.modules)


# --- the upscale job -------------------------------------------------------------------------------


def test_upscale_by_each_upscaler_and_lanczos(upscaling: Client) -> None:
    image = picture(48, 40)
    for upscaler, scale in [("tiny-esrgan-4x", 2), ("tiny-esrgan-4x", 4), ("tiny-swinir-2x", 2),
                            ("tiny-esrgan-2x", 4)]:
        result = upscaling.generate(request(image=image, scale=scale, upscaler=upscaler))
        out = result.images[0].image
        assert (out.width, out.height) == (48 * scale, 40 * scale), upscaler
        assert result.info["upscaler"] == upscaler and result.info["refine_strength"] is None
    assert upscaling.generate(request(image=image)).info["upscaler"] == "tiny-esrgan-2x"  # the first listed


def test_an_upscale_lies_where_its_image_lies_on_the_scaled_canvas(upscaling: Client) -> None:
    image = picture(32, 24)
    image.x, image.y = 10, 7
    out = upscaling.generate(request(image=image, scale=4, upscaler="tiny-esrgan-4x")).images[0].image
    assert (out.x, out.y, out.width, out.height) == (40, 28, 128, 96)


def test_upscale_with_refine_is_deterministic_and_reports_tiles(upscaling: Client) -> None:
    messages: list[Progress] = []
    fields = {"image": picture(160, 144), "upscaler": "tiny-esrgan-2x", "strength": 0.5, "prompt": "red",
              "steps": 4, "seed": 7}

    def note(message: object) -> None:
        if isinstance(message, Progress):
            messages.append(message)

    first = upscaling.generate(request(**fields), on_message=note)
    again = upscaling.generate(request(**fields))
    other = upscaling.generate(request(**{**fields, "seed": 8}))
    assert first.images[0].image.data == again.images[0].image.data
    assert first.images[0].image.data != other.images[0].image.data
    assert first.info["refine_strength"] == 0.5
    # 320x288 is larger than the tiny model's native 256²: the refine runs in tiles, each step of them.
    tiled = [m for m in messages if m.tiles is not None]
    assert tiled and all(0 <= m.tile < m.tiles for m in tiled)
    steps = [m for m in messages if m.tiles is None]
    assert [m.step for m in steps] == [1, 2] and all(m.total == 2 for m in steps)  # 4 steps at 0.5


def test_upscale_refuses_what_it_cannot_do(upscaling: Client) -> None:
    cases = [
        (request(upscaler="nope"), "upscaler"),
        (request(upscaler="armed"), "upscaler"),
        (request(scale=3), "scale"),
        (request(image=None), "image"),
        (request(autoencoder="tiny"), "autoencoder"),
    ]
    for bad, field in cases:
        with pytest.raises(ServerError) as caught:
            upscaling.generate(bad)
        assert caught.value.error.field == field, (field, caught.value.error)


def test_upscale_limits_reach_beyond_the_generate_limits() -> None:
    limits = Limits()
    big = Image(width=4096, height=4096, format="png", data=b"\x89PNG\r\n\x1a\n")
    request(image=big, scale=2, result_format="png").check(limits)  # 8192²: allowed for an upscale
    for bad, field in [(request(image=big, scale=4, result_format="png"), "scale"),
                       (request(image=big, scale=2), "result_format")]:  # 256 MiB of rgba8: not one message
        with pytest.raises(Exception) as caught:
            bad.check(limits)
        assert caught.value.field == field
    with pytest.raises(Exception) as caught:
        Generate(id="x", mode="txt2img", model="m", width=8192, height=64).check(limits)
    assert caught.value.code == TOO_LARGE


def test_cancel_lands_within_a_tile(upscaling: Client) -> None:
    """A refine of many tiles is cancelled after its first tile: at most one more tile runs."""
    job = request(image=picture(512, 512), scale=2, upscaler="tiny-esrgan-2x", strength=1.0, steps=50)
    tiled: list[Progress] = []
    first = threading.Event()

    def note(message: object) -> None:
        if isinstance(message, Progress) and message.tiles is not None and message.total:
            tiled.append(message)
            if not first.is_set():
                first.set()
                upscaling.send(Cancel(id=job.id))

    upscaling.send(job)
    ended = None
    for message in upscaling.messages(timeout=120):
        note(message)
        if isinstance(message, Cancelled) or getattr(message, "TYPE", "") in ("result", "error"):
            ended = message
            break
    assert isinstance(ended, Cancelled)
    assert len(tiled) <= 2, [(m.step, m.tile) for m in tiled]


# --- full-detail generate ------------------------------------------------------------------------


def test_full_detail_generates_at_the_canvas_size(upscaling: Client) -> None:
    fields = {"id": "", "mode": "txt2img", "model": "tiny-sd15", "prompt": "a red circle", "width": 400,
              "height": 320, "steps": 3, "seed": 4, "fit_native": True}
    fast = upscaling.generate(Generate(**{**fields, "id": uuid.uuid4().hex}))
    full = upscaling.generate(Generate(**{**fields, "id": uuid.uuid4().hex, "detail": "full"}))
    again = upscaling.generate(Generate(**{**fields, "id": uuid.uuid4().hex, "detail": "full"}))
    for result in (fast, full):
        assert (result.images[0].image.width, result.images[0].image.height) == (400, 320)
    assert fast.info["detail"] == "fast" and full.info["detail"] == "full"
    assert full.info["generation_width"] < 400 and full.info["upscaler"] == "tiny-esrgan-2x"
    assert full.images[0].image.data == again.images[0].image.data  # same seed, same pixels
    assert full.images[0].image.data != fast.images[0].image.data
    # At the native size or below, there is nothing to add detail to.
    small = upscaling.generate(Generate(**{**fields, "id": uuid.uuid4().hex, "width": 256, "height": 256,
                                           "detail": "full"}))
    assert "detail" not in small.info


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-sd15-inpaint"])
def test_full_detail_with_other_models(upscaling: Client, model: str) -> None:
    result = upscaling.generate(Generate(id=uuid.uuid4().hex, mode="txt2img", model=model, prompt="a red circle",
                                         width=384, height=320, steps=2, seed=1, fit_native=True, detail="full"))
    assert (result.images[0].image.width, result.images[0].image.height) == (384, 320)
    assert result.info["detail"] == "full"
