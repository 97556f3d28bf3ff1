"""Trains the demo model's tiny autoencoder against its VAE: `python -m tools.demo_model.tiny_autoencoder`.

What TAESD is to SD1.5, this is to the demo model: a tiny autoencoder that live frames encode and
decode with, because the VAE costs more than the UNet's few steps. It is an `AutoencoderTinyKL`
(server/models/autoencoder_tiny_kl.py: AutoencoderTiny's encoder, a narrow decoder of the VAE's
kind whose lowest level is the VAE's own). It distils the VAE:

1. teacher   a fixed set of generated pictures, their VAE latents (the distribution's mode times the
             scaling factor: the space the UNet works in), the same latents slightly perturbed, and
             the latents of live-like frames (the demo model refining a canvas at strength 0.3-0.8 in
             4 steps), each with the VAE decoder's picture. Cached in --workdir.
2. train     the encoder learns the pictures' latents, on 64 px crops (8x8 latents: it is convolutions
             alone); the decoder learns the VAE decoder's pictures from clean, perturbed and live
             latents, whole (its group norms see the whole picture), so a live preview shows what a
             full decode (Apply) gives. Checkpoints as it goes; a rerun resumes.
3. export    writes the folder the server loads beside the demo model (server/models/demo/).
4. evaluate  held-out live frames at 128 and 256 px, each decoded both ways and read by
             tools/demo_model/detect.py: how often the preview and the full decode agree on colours
             and positions, and the detector's own floor (a full decode against that of slightly
             nudged latents). Writes bench/results/demo_tiny_autoencoder.json.

`all` runs 1 to 3. Every stage is seeded. docs/demo-model.md gives the recipe's wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionImg2ImgPipeline
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from server.imaging.latents import Coder, FullVAE, TinyCoder
from server.models.autoencoder_tiny_kl import AutoencoderTinyKL
from server.models.demo import MODEL_DIR, TINY_AUTOENCODER_DIR
from server.models.tiny_autoencoders import TinyAutoencoder

from .data import SHAPE_COLOURS, Scene, caption, render, sample_scene
from .detect import MAX_DISTANCE, PALETTE, SceneCheck, check
from .evaluate import HELD_OUT_SEED
from .train import cosine_rate, to_tensor

log = logging.getLogger("underpaint.demo.tiny_autoencoder")

# The encoder is AutoencoderTiny's, 16 channels (at 32 it was no faster than the VAE's). The decoder is
# the VAE's kind (server/models/autoencoder_tiny_kl.py): its lowest level (64 channels at 1/8 of the
# picture, and the convolution that doubles it) is the VAE's own, copied and kept as it is; above it,
# half the VAE's width at each level, with as many channels per group norm as the VAE has there,
# started from the VAE's first channels (cut_to_width). Measured after 6000 steps (RESULTS, 300
# held-out live frames a side): previews agree with Apply's full decode on colour in 92% of frames at
# 128 px and 87% at 256 px, on positions in 97% and 94%; decoding costs 0.47 of the VAE's. From a
# random start and 3000 steps: 86% / 89% and 97% / 95%. AutoencoderTiny's decoder (no group norms, one
# width at every level), trained 6400 steps by this recipe's earlier form: 81% / 79% and 94% / 90%.
ENCODER_CHANNELS = 16
ENCODER_BLOCKS = (1, 1, 1, 1)
DECODER_CHANNELS = (8, 16, 32, 64)
DECODER_NORM_GROUPS = (4, 4, 4, 8)
# The decoder's error in each 8x8 patch's mean colour also counts: the colour of a region is what an
# artist (and the detector) reads first.
COLOUR_WEIGHT = 4.0
# Pixels must also take the palette name the VAE's pixel has (the nearest demo colour within
# MAX_DISTANCE, else none), by cross-entropy over -distance² / PALETTE_SOFTNESS (levels of 255,
# squared): most disagreements were pixels tipped between two palette colours by a few levels, and a
# mean error alone does not say on which side of the border to stay.
PALETTE_WEIGHT = 0.5
PALETTE_SOFTNESS = 200.0
# The parts of the decoder (and its input) that are the VAE's: they have its names and shapes.
COPIED = ("post_quant_conv", "decoder.conv_in", "decoder.mid_block", "decoder.up_blocks.0")
LIVE_STEPS = 4
LIVE_GUIDANCE = 3.0
LIVE_STRENGTH = 0.5  # of the evaluated frames, as the plugin's Live starts
# Latent noise (of their unit deviation) that the detector's floor is measured with: the full decodes
# of a frame with and without it differ by about one level of 255 on average.
NUDGE = 0.03
RESULTS = Path("bench/results/demo_tiny_autoencoder.json")


@dataclass(frozen=True)
class Settings:
    workdir: Path = Path("build/demo-tiny-ae")
    out: Path = TINY_AUTOENCODER_DIR
    seed: int = 0
    threads: int = 1
    side: int = 128
    pictures: int = 4096
    live_frames: int = 4096
    steps: int = 6000
    batch: int = 16  # encoder: crops of pictures
    crop: int = 8  # latent pixels (x 8 picture pixels) a side
    # decoder: whole pictures (group norms see the whole picture) and whole live frames
    picture_batch: int = 8
    live_batch: int = 8
    lr: float = 1e-3
    warmup: int = 100
    perturbation: float = 0.15  # of the latents' unit standard deviation
    checkpoint_every: int = 200
    eval_frames: int = 300  # per picture side: on the first 100 alone, shares were up to 6 points off
    results: Path = RESULTS


def make_tiny(vae: AutoencoderKL) -> AutoencoderTinyKL:
    """A new tiny autoencoder for `vae`'s latents: its decoder's lowest level copied from `vae`'s and
    kept as it is, the narrower levels above started from `vae`'s weights cut to their width."""
    tiny = AutoencoderTinyKL(encoder_block_out_channels=(ENCODER_CHANNELS,) * 4, num_encoder_blocks=ENCODER_BLOCKS,
                             decoder_block_out_channels=DECODER_CHANNELS, decoder_norm_groups=DECODER_NORM_GROUPS,
                             latent_channels=vae.config.latent_channels, scaling_factor=vae.config.scaling_factor)
    cut_to_width(tiny.decoder, vae.decoder)
    for name in COPIED:
        part, theirs = tiny.get_submodule(name), vae.get_submodule(name)
        part.load_state_dict(theirs.state_dict())
        part.requires_grad_(False)
    return tiny


@torch.no_grad()
def cut_to_width(narrow: torch.nn.Module, wide: torch.nn.Module) -> None:
    """Sets each of `narrow`'s parameters to the first channels of `wide`'s of the same name. With as
    many channels per group norm as the wide one has, the first channels are whole groups, which
    normalise as they did. Where a level narrows, `narrow` has a shortcut convolution that `wide`
    (an identity there) has not: it starts as the identity on the first channels."""
    theirs = dict(wide.named_parameters())
    for name, parameter in narrow.named_parameters():
        if name in theirs:
            parameter.copy_(theirs[name][tuple(slice(0, size) for size in parameter.shape)])
        elif ".conv_shortcut." in name:
            parameter.copy_(torch.eye(*parameter.shape[:2]).reshape(parameter.shape) if parameter.ndim == 4
                            else torch.zeros_like(parameter))
        else:
            raise KeyError(f"{name}: the wide model has no such parameter")


def load_vae() -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(MODEL_DIR / "vae", local_files_only=True).eval()


def to_bytes(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] pixels as uint8, the form the teacher set keeps them in (a quarter of the memory)."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).contiguous()


def to_pixels(stored: torch.Tensor) -> torch.Tensor:
    return stored.float() / 127.5 - 1


# --- 1. teacher set ----------------------------------------------------------------------------


def live_canvas(scene: Scene, side: int, rng: random.Random) -> Image.Image:
    """The scene as an artist's canvas might look mid-sketch: half the time with a few rough strokes."""
    picture = render(scene, side)
    if rng.random() < 0.5:
        draw = ImageDraw.Draw(picture)
        for _ in range(rng.randint(1, 3)):
            points = [(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(rng.randint(2, 4))]
            draw.line(points, fill=SHAPE_COLOURS[rng.choice(list(SHAPE_COLOURS))], width=max(2, side // 24))
    return picture


def prompt_scene(scene: Scene, rng: random.Random) -> Scene:
    """The scene a live frame's prompt describes: half the time what the canvas shows, half another
    one, as when the artist changes the prompt (the model then repaints more)."""
    return scene if rng.random() < 0.5 else sample_scene(rng)


@torch.no_grad()
def vae_latents(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor


@torch.no_grad()
def vae_pictures(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    return vae.decode(latents / vae.config.scaling_factor).sample


def load_live_pipeline(vae: AutoencoderKL) -> StableDiffusionImg2ImgPipeline:
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(MODEL_DIR, vae=vae, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def live_latents(pipe: StableDiffusionImg2ImgPipeline, start: torch.Tensor, prompts: list[str], strength: float,
                 seed: int) -> torch.Tensor:
    """The latents a live frame ends with: `start` (scaled latents) refined at `strength`."""
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompts, image=start, strength=strength, num_inference_steps=LIVE_STEPS,
                guidance_scale=LIVE_GUIDANCE, generator=generator, output_type="latent").images


def teacher_set(settings: Settings) -> dict[str, torch.Tensor]:
    """Pictures, their latents (clean, perturbed) and live latents, each with the VAE's decode."""
    vae = load_vae()
    rng = random.Random(settings.seed)
    noise = torch.Generator().manual_seed(settings.seed)
    parts: dict[str, list[torch.Tensor]] = {"pictures": [], "latents": [], "inputs": [], "decoded": []}
    started = time.monotonic()
    for start in range(0, settings.pictures, 32):
        pixels = to_tensor([render(sample_scene(rng), settings.side)
                            for _ in range(min(32, settings.pictures - start))])
        z = vae_latents(vae, pixels)
        # Half of the decoder's inputs perturbed: it must also follow latents off the VAE's manifold.
        perturbed = torch.rand(len(z), 1, 1, 1, generator=noise) < 0.5
        z_in = torch.where(perturbed, z + settings.perturbation * torch.randn(z.shape, generator=noise), z)
        parts["pictures"].append(to_bytes(pixels))
        parts["latents"].append(z)
        parts["inputs"].append(z_in)
        parts["decoded"].append(to_bytes(vae_pictures(vae, z_in)))
    log.info("teacher pictures: %d in %.0f s", settings.pictures, time.monotonic() - started)
    pipe = load_live_pipeline(vae)
    live, live_decoded = [], []
    for start in range(0, settings.live_frames, 16):
        count = min(16, settings.live_frames - start)
        scenes = [sample_scene(rng) for _ in range(count)]
        canvas = to_tensor([live_canvas(scene, settings.side, rng) for scene in scenes])
        z = live_latents(pipe, vae_latents(vae, canvas), [caption(prompt_scene(s, rng)) for s in scenes],
                         rng.uniform(0.3, 0.8), rng.randrange(2**31))
        live.append(z)
        live_decoded.append(to_bytes(vae_pictures(vae, z)))
    log.info("teacher live frames: %d (%.0f s in all)", settings.live_frames, time.monotonic() - started)
    data = {name: torch.cat(tensors) for name, tensors in parts.items()}
    # Contiguous, as safetensors stores them (the VAE's latents are views of its moments).
    return {name: tensor.contiguous() for name, tensor in
            (data | {"live": torch.cat(live), "live_decoded": torch.cat(live_decoded)}).items()}


# --- 2. training -------------------------------------------------------------------------------


def crop(latents: torch.Tensor, pictures: torch.Tensor, side: int,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random square of each latent and of its picture (8 picture pixels per latent pixel)."""
    room = latents.shape[-1] - side + 1
    y, x = (int(v) for v in torch.randint(0, room, (2,), generator=generator))
    return (latents[..., y:y + side, x:x + side],
            pictures[..., 8 * y:8 * (y + side), 8 * x:8 * (x + side)])


def palette_logits(pixels: torch.Tensor) -> torch.Tensor:
    """[B, names + 1, H, W]: how near each pixel (-1..1) is to each palette colour, the last for none."""
    levels = (pixels + 1) * 127.5
    palette = torch.tensor(list(PALETTE.values()), dtype=levels.dtype)[None, :, :, None, None]
    distances = ((levels[:, None] - palette) ** 2).sum(dim=2)
    none = torch.full_like(distances[:, :1], MAX_DISTANCE**2)
    return -torch.cat([distances, none], dim=1) / PALETTE_SOFTNESS


def palette_loss(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(palette_logits(decoded), palette_logits(target).argmax(dim=1))


def decoder_loss(tiny: AutoencoderTinyKL, latents: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    decoded = tiny.decode(latents / tiny.config.scaling_factor).sample
    colour = F.mse_loss(F.avg_pool2d(decoded, 8), F.avg_pool2d(target, 8))
    return (F.l1_loss(decoded, target) + F.mse_loss(decoded, target) + COLOUR_WEIGHT * colour
            + PALETTE_WEIGHT * palette_loss(decoded, target))


def losses(tiny: AutoencoderTinyKL, data: dict[str, torch.Tensor], step: int,
           settings: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder and decoder losses on the step's batch, drawn from (seed, step) alone so that a resumed
    run draws what an uninterrupted one would. The encoder sees crops (it is convolutions alone); the
    decoder whole pictures and live frames, as its group norms will in use."""
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
    index = torch.randint(0, len(data["pictures"]), (settings.batch,), generator=generator)
    latents, pictures = crop(data["latents"][index], data["pictures"][index], settings.crop, generator)
    encode_loss = F.mse_loss(tiny.encode(to_pixels(pictures)).latents, latents / tiny.config.scaling_factor)
    index = torch.randint(0, len(data["inputs"]), (settings.picture_batch,), generator=generator)
    live = torch.randint(0, len(data["live"]), (settings.live_batch,), generator=generator)
    inputs = torch.cat([data["inputs"][index], data["live"][live]])
    target = to_pixels(torch.cat([data["decoded"][index], data["live_decoded"][live]]))
    return encode_loss, decoder_loss(tiny, inputs, target)


def learning_rate(step: int, settings: Settings) -> float:
    return cosine_rate(step, settings.steps, settings.lr, settings.warmup)


def save_checkpoint(tiny: AutoencoderTinyKL, optimizer: torch.optim.Optimizer, step: int, path: Path) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save({"step": step, "model": tiny.state_dict(), "optimizer": optimizer.state_dict()}, temporary)
    temporary.replace(path)


def train(data: dict[str, torch.Tensor], settings: Settings, checkpoint: Path) -> AutoencoderTinyKL:
    torch.manual_seed(settings.seed)
    tiny = make_tiny(load_vae())
    optimizer = torch.optim.AdamW([p for p in tiny.parameters() if p.requires_grad], lr=settings.lr,
                                  weight_decay=0.0)
    step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        tiny.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        log.info("resuming at step %d", step)
    started = time.monotonic()
    tiny.train()
    while step < settings.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        encode_loss, decode_loss = losses(tiny, data, step, settings)
        optimizer.zero_grad(set_to_none=True)
        (encode_loss + decode_loss).backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            log.info("step %d/%d encode %.4f decode %.4f (%.0f s)", step, settings.steps, encode_loss.item(),
                     decode_loss.item(), time.monotonic() - started)
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_checkpoint(tiny, optimizer, step, checkpoint)
    return tiny.eval()


def export(tiny: AutoencoderTinyKL, out: Path) -> None:
    tiny.save_pretrained(out, safe_serialization=True)
    log.info("saved the tiny autoencoder to %s", out)


# --- 4. evaluation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """What the detector reads in a picture, for the prompt's scene: the background's colour names,
    and for each shape whether its colour is there and, if so, at which position."""

    background: tuple[str | None, str | None]
    shapes: tuple[str | None, ...]  # position word of each shape's blob, None where there is none

    @classmethod
    def of(cls, result: SceneCheck) -> Reading:
        return cls(result.background_found, tuple(s.blob.position if s.blob else None for s in result.shapes))

    def colours_agree(self, other: Reading) -> bool:
        return self.background == other.background and [p is None for p in self.shapes] == [
            p is None for p in other.shapes]

    def positions_agree(self, other: Reading) -> bool:
        return all(a == b for a, b in zip(self.shapes, other.shapes, strict=True) if a and b)


@dataclass
class Agreement:
    frames: int = 0
    colour: int = 0
    position: int = 0
    both: int = 0

    def add(self, a: Reading, b: Reading) -> None:
        colour, position = a.colours_agree(b), a.positions_agree(b)
        self.frames += 1
        self.colour += colour
        self.position += position
        self.both += colour and position

    def report(self) -> dict[str, float | int]:
        share = {name: round(getattr(self, name) / self.frames, 4) for name in ("colour", "position", "both")}
        return {"frames": self.frames, **share}


def live_frames(pipe: StableDiffusionImg2ImgPipeline, coder: Coder, canvases: list[Image.Image], prompts: list[str],
                seed: int) -> torch.Tensor:
    """The final latents of live frames as the server makes them: each canvas encoded by `coder`, then
    refined at the live strength in 4 steps."""
    start = torch.cat([coder.encode(canvas) for canvas in canvases])
    return live_latents(pipe, start, prompts, LIVE_STRENGTH, seed)


def evaluate(tiny: AutoencoderTinyKL, frames: int, sides: list[int], seed: int) -> dict:
    """Per side: how often the detector reads the same in a live frame's preview (tiny decode) as in its
    full decode (what Apply gives), and as in the frame made with the full VAE both ways. And the
    detector's own floor: how often it reads the same in the full decode of the frame's latents nudged
    by NUDGE (a change no one would see), so the agreement measures the coder, not the detector."""
    pipe = load_live_pipeline(load_vae())
    tiny_coder, full = TinyCoder(pipe, TinyAutoencoder("demo", tiny)), FullVAE(pipe)
    noise = torch.Generator().manual_seed(seed)
    results = {}
    for side in sides:
        rng = random.Random(seed + side)
        with_apply, with_full_frame, floor = Agreement(), Agreement(), Agreement()
        for start in range(0, frames, 10):
            scenes = [sample_scene(rng) for _ in range(min(10, frames - start))]
            canvases = [live_canvas(scene, side, rng) for scene in scenes]
            asked = [prompt_scene(scene, rng) for scene in scenes]
            prompts = [caption(scene) for scene in asked]
            latents = live_frames(pipe, tiny_coder, canvases, prompts, seed + start)
            previews, applied = tiny_coder.decode(latents), full.decode(latents)
            nudged = full.decode(latents + NUDGE * torch.randn(latents.shape, generator=noise))
            full_frames = full.decode(live_frames(pipe, full, canvases, prompts, seed + start))
            for scene, preview, apply, full_frame, apply_nudged in zip(asked, previews, applied, full_frames, nudged,
                                                                       strict=True):
                reading, applied_reading = Reading.of(check(preview, scene)), Reading.of(check(apply, scene))
                with_apply.add(reading, applied_reading)
                with_full_frame.add(reading, Reading.of(check(full_frame, scene)))
                floor.add(applied_reading, Reading.of(check(apply_nudged, scene)))
        results[str(side)] = {"preview_vs_apply": with_apply.report(),
                              "preview_vs_full_vae_frame": with_full_frame.report(),
                              "apply_vs_apply_nudged": floor.report()}
        log.info("%d px: %s", side, results[str(side)])
    return results


def coder_seconds(tiny: AutoencoderTinyKL, side: int = 512, repeats: int = 3) -> dict[str, float]:
    """Seconds to encode and to decode one side x side picture, by the VAE and by the tiny autoencoder."""
    vae = load_vae()
    pixels = torch.zeros(1, 3, side, side)
    latents = torch.zeros(1, 4, side // 8, side // 8)
    calls = {"vae_encode": lambda: vae.encode(pixels), "vae_decode": lambda: vae.decode(latents),
             "tiny_encode": lambda: tiny.encode(pixels), "tiny_decode": lambda: tiny.decode(latents)}
    timings = {}
    with torch.no_grad():
        for name, call in calls.items():
            call()
            started = time.perf_counter()
            for _ in range(repeats):
                call()
            timings[name] = round((time.perf_counter() - started) / repeats, 4)
    return timings


def write_evaluation(settings: Settings, frames: int, output: Path) -> None:
    tiny = AutoencoderTinyKL.from_pretrained(settings.out, local_files_only=True).eval()
    checkpoint = settings.workdir / "checkpoint.pt"
    started = time.monotonic()
    report = {
        "what": "held-out live-like frames of the demo model (a canvas refined at strength 0.5 in 4 Euler steps, "
                "CFG 3), read by tools/demo_model/detect.py; agreement = the same background colours, the same "
                "shape colours found, and the same positions where both show a shape; apply_vs_apply_nudged: the "
                f"full decode against that of the latents nudged by {NUDGE}, the detector's own floor",
        "targets": {"preview_vs_apply": {"colour": 0.95, "position": 0.95}},
        "results_by_side": evaluate(tiny, frames, [128, 256], HELD_OUT_SEED),
        "seconds_512px": coder_seconds(tiny),
        "training_steps": torch.load(checkpoint, weights_only=True)["step"] if checkpoint.exists() else None,
        "weights_kb": round(sum(p.stat().st_size for p in settings.out.glob("*.safetensors")) / 1e3, 1),
        "parameters": sum(p.numel() for p in tiny.parameters()),
        "hardware": f"{platform.processor() or platform.machine()}, {settings.threads} torch threads",
        "evaluation_minutes": round((time.monotonic() - started) / 60, 1),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def run(stage: str, settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    teacher = settings.workdir / "teacher.safetensors"
    checkpoint = settings.workdir / "checkpoint.pt"
    started = time.monotonic()
    if stage in ("all", "teacher") and not teacher.exists():
        save_file(teacher_set(settings), teacher)
    if stage in ("all", "train"):
        export(train(load_file(teacher), settings, checkpoint), settings.out)
    elif stage == "export":  # whatever the last checkpoint holds, e.g. to try a run in progress
        tiny = make_tiny(load_vae())
        tiny.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
        export(tiny.eval(), settings.out)
    elif stage == "evaluate":
        write_evaluation(settings, settings.eval_frames, settings.results)
    log.info("stage %s done in %.1f min", stage, (time.monotonic() - started) / 60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", choices=("all", "teacher", "train", "export", "evaluate"), default="all")
    parser.add_argument("--workdir", type=Path, default=Settings.workdir)
    parser.add_argument("--out", type=Path, default=Settings.out)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--threads", type=int, default=Settings.threads,
                        help="torch threads; where other work shares the cores, 1 is faster")
    parser.add_argument("--frames", type=int, default=Settings.eval_frames, help="evaluate: live frames per side")
    parser.add_argument("--results", type=Path, default=RESULTS, help="evaluate: the report to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings(workdir=args.workdir, out=args.out, steps=args.steps, threads=args.threads,
                        eval_frames=args.frames, results=args.results)
    run(args.stage, settings)


if __name__ == "__main__":
    main()
