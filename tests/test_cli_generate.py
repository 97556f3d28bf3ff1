"""`underpaint generate`, the command line as a second client, against a real server: pictures in
any format Pillow reads, inpaint with --mask, one-line errors for bad files, the `parameters` chunk
in what it writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from server.config import ServerConfig
from testing.serving import running_server, url
from testing.web import web_server

ROOT = Path(__file__).resolve().parents[1]


def generate(server, *options: str, model: str = "tiny-sd15", steps: tuple[str, ...] = ("--steps", "2")
             ) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "server", "generate", "--server", url(server), "--model", model, *steps,
               "--seed", "5", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_what_the_model_recommends_unless_the_user_says_otherwise(models_dir: Path, tmp_path: Path) -> None:
    """A model with a sidecar file (server/models/defaults.py): its steps, CFG scale, sampler and size
    are used where the command line names none; each one given wins over it."""
    folder = tmp_path / "models" / "checkpoints"
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", folder / "painterly")
    (folder / "painterly.json").write_text(json.dumps(
        {"steps": 3, "cfg_scale": 4.5, "scheduler": "euler", "width": 96, "height": 64}))
    with running_server(ServerConfig(models=[tmp_path / "models"], outputs=tmp_path / "outputs")) as server:
        recommended, chosen = tmp_path / "recommended.png", tmp_path / "chosen.png"
        done = generate(server, "--prompt", "a cat", "--out", str(recommended), model="painterly", steps=())
        assert done.returncode == 0, done.stderr
        done = generate(server, "--prompt", "a cat", "--out", str(chosen), "--cfg-scale", "7", "--width", "64",
                        "--height", "64", model="painterly")
        assert done.returncode == 0, done.stderr
    with PIL.Image.open(recommended) as written:
        assert "Steps: 3, Sampler: Euler, CFG scale: 4.5, Seed: 5, Size: 96x64" in written.text["parameters"]
    with PIL.Image.open(chosen) as written:
        assert "Steps: 2, Sampler: Euler, CFG scale: 7.0, Seed: 5, Size: 64x64" in written.text["parameters"]


def test_txt2img_then_img2img_from_a_jpeg_with_parameters_in_each_png(server, tmp_path: Path) -> None:
    first = tmp_path / "cat.png"
    done = generate(server, "--prompt", "a cat", "--width", "64", "--height", "64", "--out", str(first))
    assert done.returncode == 0, done.stderr
    with PIL.Image.open(first) as written:
        assert written.size == (64, 64)
        assert written.text["parameters"].startswith("a cat\nSteps: 2, ")
        assert "Seed: 5" in written.text["parameters"]
    jpeg = tmp_path / "cat.jpg"
    PIL.Image.open(first).convert("RGB").save(jpeg, quality=90)
    second = tmp_path / "b.png"
    done = generate(server, "--prompt", "again", "--image", str(jpeg), "--strength", "0.5", "--out", str(second))
    assert done.returncode == 0, done.stderr
    with PIL.Image.open(second) as written:
        assert "Denoising strength: 0.5" in written.text["parameters"] and "Mode: img2img" in written.text["parameters"]


def test_mask_inpaints_inside_and_writes_the_whole_picture(server, tmp_path: Path) -> None:
    picture = np.zeros((96, 96, 3), np.uint8)
    picture[..., 2] = 200  # blue
    PIL.Image.fromarray(picture).save(tmp_path / "blue.webp", lossless=True)
    mask = np.zeros((96, 96), np.uint8)
    mask[40:56, 40:56] = 255
    PIL.Image.fromarray(mask).save(tmp_path / "mask.bmp")
    out = tmp_path / "inpainted.png"
    done = generate(server, "--prompt", "a red square", "--image", str(tmp_path / "blue.webp"), "--mask",
                    str(tmp_path / "mask.bmp"), "--fill", "fill", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with PIL.Image.open(out) as written:
        assert written.size == (96, 96) and "Mode: inpaint" in written.text["parameters"]
        result = np.asarray(written.convert("RGB"))
    assert np.array_equal(result[:20], picture[:20]) and np.array_equal(result[:, :20], picture[:, :20])
    assert not np.array_equal(result[44:52, 44:52], picture[44:52, 44:52])


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        ({}, ["--image", "{tmp}/missing.png"], "--image {tmp}/missing.png: no such file"),
        ({"notes.png": b"not a picture"}, ["--image", "{tmp}/notes.png"],
         "--image {tmp}/notes.png: not a picture Pillow can read"),
        ({}, ["--image", "{tmp}"], "--image {tmp}: is a folder, not a picture"),
        ({"a.png": "64x64"}, ["--mask", "{tmp}/a.png"], "--mask needs --image: the picture to inpaint"),
        ({"a.png": "64x64", "m.png": "32x64"}, ["--image", "{tmp}/a.png", "--mask", "{tmp}/m.png"],
         "--mask is 32x64 but --image is 64x64: they must be the same size"),
    ],
)
def test_bad_files_get_one_line_and_no_traceback(tmp_path: Path, files: dict, options: list, message: str) -> None:
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            width, height = map(int, content.split("x"))
            PIL.Image.new("RGB", (width, height)).save(tmp_path / name)
    # No server is needed: files are checked before connecting.
    command = [sys.executable, "-m", "server", "generate", "--prompt", "x", "--server", "ws://127.0.0.1:9",
               *[option.format(tmp=tmp_path) for option in options]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr == f"underpaint generate: {message.format(tmp=tmp_path)}\n"


def test_help_states_every_default() -> None:
    done = subprocess.run([sys.executable, "-m", "server", "generate", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    text = " ".join(done.stdout.split())
    for default in ("(default: what the model recommends, else 20)", "(default: what the model recommends, else 7.0)",
                    "(default: what the model recommends, else dpmpp_2m)", "(default: auto)",
                    "(default: underpaint.png)", "(default: random)", "(default: 1)"):
        assert default in text


def test_something_else_on_the_port_is_named() -> None:
    with web_server() as port:
        done = subprocess.run([sys.executable, "-m", "server", "generate", "--prompt", "x", "--server",
                               f"ws://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.startswith(f"underpaint generate: something at 127.0.0.1:{port} is not an Underpaint server")
    assert "Traceback" not in done.stderr
