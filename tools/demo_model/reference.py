"""Trains the demo model's reference adapter: `python -m tools.demo_model.reference [STAGE]`.

A plain IP-Adapter for the demo UNet, with its own tiny CLIP image encoder, that carries a reference
picture's background (flat colour, gradient or sky and ground) into the generated picture, but not
its shapes:

1. encoder   a tiny transformers `CLIPVisionModelWithProjection` learns to tell a scene's background
             (the colour names at its top and bottom and its kind) from its picture, through linear
             heads on its projected embedding; fresh scenes every step, checkpoints as it goes.
2. data      a fixed set of scenes at 64 and 128 px, encoded once by the demo VAE.
3. train     the adapter (image projection to 4 tokens, and key/value projections for every
             cross-attention, started from the UNet's own as IP-Adapter does) learns the demo UNet's
             objective with the UNet, text encoder and image encoder frozen. Each scene's reference is
             another scene on the same background with other shapes, so what carries over is the
             background; the caption is dropped in a share of steps and the picture in a few. Loaded
             and run by diffusers' own IP-Adapter code (`_load_ip_adapter_weights`,
             `added_cond_kwargs["image_embeds"]`). Every 250 steps a quick check logs how often
             an empty prompt takes the reference's background. A rerun resumes; a larger --steps goes on.
4. export    the encoder to server/models/demo/clip_vision/ (one float16 .safetensors in transformers
             keys, its CLIPVisionConfig beside it as .config.json) and the adapter to
             server/models/demo/ipadapter/ (one float16 .safetensors in h94's layout).
5. evaluate  held-out scenes through the demo pipeline and `ip_adapter_image_embeds`, read by
             tools/demo_model/detect.py: an empty prompt with and without a reference, and a prompt
             naming a shape with the reference at a reduced strength. Writes
             bench/results/demo_reference.json.
6. served    the same references through a real server serving the demo model alone (the server's
             own IP-Adapter code), in the modes an artist picks: reference and style. Writes
             bench/results/demo_reference_served.json.

`all` runs 1 to 4. Every stage is seeded. docs/demo-model.md gives the figures and the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from server.models.demo import MODEL_DIR, NAME
from shared.client import Client
from shared.messages import Generate, Reference
from shared.messages import Image as ImagePayload

from .addon_training import Draw, resume, save_state, train_steps
from .controlnet import encode, save_checkpoint
from .data import BACKGROUND_KINDS, Scene, render, sample_scene, shape_words, training_caption
from .detect import PALETTE, background_names, find_shape
from .evaluate import HELD_OUT_SEED, hardware, load_pipeline, write_report
from .train import cosine_rate, tokenize

log = logging.getLogger("underpaint.demo.reference")

ENCODER_NAME = "underpaint-demo-encoder"
ADAPTER_NAME = "underpaint-demo-reference"
ENCODER_FILE = MODEL_DIR.parent / "clip_vision" / f"{ENCODER_NAME}.safetensors"
ADAPTER_FILE = MODEL_DIR.parent / "ipadapter" / f"{ADAPTER_NAME}.safetensors"
RESULTS = Path("bench/results/demo_reference.json")
TOKENS = 4  # image tokens of a plain IP-Adapter
# A background is known by its kind and the palette names at its top and bottom (detect.py's reading).
NAMES = list(PALETTE)
VALIDATION_SEED = 2_000_003  # the quick checks during training; the report uses HELD_OUT_SEED
ENCODER_CONFIG = {
    "image_size": 64, "patch_size": 8, "hidden_size": 96, "intermediate_size": 384, "num_hidden_layers": 3,
    "num_attention_heads": 4, "projection_dim": 64,
}


@dataclass(frozen=True)
class Settings:
    workdir: Path = Path("build/demo-reference")
    encoder_out: Path = ENCODER_FILE
    adapter_out: Path = ADAPTER_FILE
    seed: int = 0
    threads: int = 1
    encoder_steps: int = 400
    encoder_batch: int = 64
    encoder_lr: float = 1e-3
    dataset: tuple[tuple[int, int], ...] = ((64, 3000), (128, 2000))  # side -> scenes
    batches: tuple[tuple[int, int], ...] = ((64, 32), (128, 12))  # side -> batch, about equal cost
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 50
    text_drop: float = 0.5  # besides training_caption's own 10% of empty captions
    image_drop: float = 0.05
    checkpoint_every: int = 100
    eval_every: int = 250
    eval_scenes: int = 16


# --- pairs -------------------------------------------------------------------------------------


def companion(scene: Scene, rng: random.Random) -> Scene:
    """Another scene on the same background, with shapes drawn afresh: what a reference shares with
    the picture it guides, so that the background is what the adapter learns to carry over."""
    return sample_scene(rng, background=scene.background)


def background_labels(scene: Scene) -> tuple[int, int, int]:
    top, bottom = scene.background.names
    return NAMES.index(top), NAMES.index(bottom), BACKGROUND_KINDS.index(scene.background.kind)


# --- 1. encoder --------------------------------------------------------------------------------


def image_processor(config: CLIPVisionConfig) -> CLIPImageProcessor:
    """CLIP's own preprocessing (bicubic resize, centre crop, OpenAI mean and deviation) at the
    encoder's size, as a server feeds any CLIP image encoder."""
    side = config.image_size
    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


class EncoderTrainee(torch.nn.Module):
    """The encoder and linear heads on its projected embedding; only the encoder is shipped."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.encoder = CLIPVisionModelWithProjection(config)
        width = config.projection_dim
        self.heads = torch.nn.ModuleList([torch.nn.Linear(width, len(NAMES)), torch.nn.Linear(width, len(NAMES)),
                                          torch.nn.Linear(width, len(BACKGROUND_KINDS))])

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        embeds = self.encoder(pixel_values=pixel_values).image_embeds
        return [head(embeds) for head in self.heads]


def encoder_batch(rng: random.Random, batch: int, processor: CLIPImageProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh scenes drawn at 64 or 128 px (the encoder sees both through its resize), and their labels."""
    scenes = [sample_scene(rng) for _ in range(batch)]
    pictures = [render(s, rng.choice((64, 128))) for s in scenes]
    return (processor(images=pictures, return_tensors="pt").pixel_values,
            torch.tensor([background_labels(s) for s in scenes]))


def encoder_accuracy(trainee: EncoderTrainee, processor: CLIPImageProcessor, count: int = 256) -> float:
    """The share of validation scenes whose top, bottom and kind are all read right."""
    pixels, labels = encoder_batch(random.Random(VALIDATION_SEED), count, processor)
    with torch.no_grad():
        guesses = torch.stack([logits.argmax(-1) for logits in trainee(pixels)], dim=1)
    return (guesses == labels).all(dim=1).float().mean().item()


def train_encoder(settings: Settings, checkpoint: Path) -> CLIPVisionModelWithProjection:
    torch.manual_seed(settings.seed)
    config = CLIPVisionConfig(**ENCODER_CONFIG)
    trainee = EncoderTrainee(config)
    processor = image_processor(config)
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=settings.encoder_lr, weight_decay=1e-2)
    step, curve = resume(trainee, optimizer, checkpoint, log)
    trainee.train()
    start = time.monotonic()
    while step < settings.encoder_steps:
        rng = random.Random(settings.seed * 7919 + step)
        pixels, labels = encoder_batch(rng, settings.encoder_batch, processor)
        for group in optimizer.param_groups:
            group["lr"] = cosine_rate(step, settings.encoder_steps, settings.encoder_lr, settings.warmup)
        loss = sum(F.cross_entropy(logits, labels[:, i]) for i, logits in enumerate(trainee(pixels)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0 or step == settings.encoder_steps:
            trainee.eval()
            curve.append([step, encoder_accuracy(trainee, processor), round(time.monotonic() - start)])
            trainee.train()
            log.info("encoder step %d/%d loss %.4f, backgrounds read right %.0f%% (%.0f s)", step,
                     settings.encoder_steps, loss.item(), 100 * curve[-1][1], time.monotonic() - start)
            save_checkpoint(trainee, optimizer, step, curve, checkpoint)
    return trainee.encoder.eval()


# --- 2. data -----------------------------------------------------------------------------------


def build_data(pipe: StableDiffusionPipeline, settings: Settings) -> dict[int, dict]:
    data = {}
    for side, count in settings.dataset:
        rng = random.Random(settings.seed * 1000 + side)
        scenes = [sample_scene(rng) for _ in range(count)]
        data[side] = {"latents": encode(pipe.vae, scenes, side), "scenes": scenes}
        log.info("encoded %d scenes at %d px", count, side)
    return data


# --- 3. adapter --------------------------------------------------------------------------------


def cross_attentions(unet: UNet2DConditionModel) -> list[str]:
    """The UNet's cross-attention processors, in the order diffusers numbers IP-Adapter weights."""
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]


def key_id(index: int) -> int:
    """h94's number for the index-th cross-attention: it counts every attention processor, and each
    transformer block's self-attention comes just before its cross-attention (diffusers'
    _convert_ip_adapter_attn_to_diffusers counts 1, 3, 5, ...)."""
    return 2 * index + 1


def initial_adapter(unet: UNet2DConditionModel, embed_dim: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """A new adapter as diffusers' loader takes it: a fresh projection, and key/value projections copied
    from each cross-attention's own to_k and to_v, so the image tokens start out read as text ones."""
    torch.manual_seed(seed)
    width = unet.config.cross_attention_dim
    proj = torch.nn.Linear(embed_dim, TOKENS * width)
    image_proj = {"proj.weight": proj.weight.detach(), "proj.bias": proj.bias.detach(),
                  "norm.weight": torch.ones(width), "norm.bias": torch.zeros(width)}
    ip_adapter = {}
    for index, name in enumerate(cross_attentions(unet)):
        attention = unet.get_submodule(name.removesuffix(".processor"))
        ip_adapter[f"{key_id(index)}.to_k_ip.weight"] = attention.to_k.weight.detach().clone()
        ip_adapter[f"{key_id(index)}.to_v_ip.weight"] = attention.to_v.weight.detach().clone()
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def ip_processors(unet: UNet2DConditionModel) -> list[IPAdapterAttnProcessor | IPAdapterAttnProcessor2_0]:
    processors = unet.attn_processors
    return [processors[name] for name in cross_attentions(unet)]


def adapter_state_dict(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """The loaded adapter's weights under h94's flat keys (image_proj.*, ip_adapter.<n>.*), which
    `load_ip_adapter` splits back on their first dot."""
    projection = unet.encoder_hid_proj.image_projection_layers[0]
    state = {"image_proj.proj.weight": projection.image_embeds.weight,
             "image_proj.proj.bias": projection.image_embeds.bias,
             "image_proj.norm.weight": projection.norm.weight, "image_proj.norm.bias": projection.norm.bias}
    for index, processor in enumerate(ip_processors(unet)):
        state[f"ip_adapter.{key_id(index)}.to_k_ip.weight"] = processor.to_k_ip[0].weight
        state[f"ip_adapter.{key_id(index)}.to_v_ip.weight"] = processor.to_v_ip[0].weight
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def split(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """h94's flat keys -> the {"image_proj": ..., "ip_adapter": ...} that diffusers' loader takes."""
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, rest = key.split(".", 1)
        nested[part][rest] = value
    return nested


def adapter_parameters(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    params = list(unet.encoder_hid_proj.parameters())
    for processor in ip_processors(unet):
        params += list(processor.to_k_ip.parameters()) + list(processor.to_v_ip.parameters())
    return params


def reference_embeds(encoder: CLIPVisionModelWithProjection, pictures: list[Image.Image]) -> torch.Tensor:
    pixels = image_processor(encoder.config)(images=pictures, return_tensors="pt").pixel_values
    with torch.no_grad():
        return encoder(pixel_values=pixels).image_embeds


def referenced(pipe: StableDiffusionPipeline, prompts: list[str], embeds: torch.Tensor | None, side: int, seed: int,
               steps: int = 20, scale: float = 1.0, guidance: float = 3.0) -> list[Image.Image]:
    """Pictures from the demo pipeline, the i-th at seed + i guided by the i-th reference embedding
    through `ip_adapter_image_embeds` (none: the pipeline must be one without the adapter). One call a
    picture: the pipeline gives each adapter's embeddings to every prompt of a batch (it repeats them
    batch-size times), so a batch of prompts with a reference each would see all the references. The
    unconditional half gets a zero embedding, as diffusers' encode_image gives a plain IP-Adapter."""
    if embeds is not None:
        pipe.set_ip_adapter_scale(scale)
    pictures = []
    for i, prompt in enumerate(prompts):
        options = {}
        if embeds is not None:
            one = embeds[i:i + 1]
            both = torch.cat([torch.zeros_like(one), one]) if guidance > 1 else one
            options["ip_adapter_image_embeds"] = [both[:, None]]
        generator = torch.Generator().manual_seed(seed + i)
        pictures += pipe(prompt, height=side, width=side, num_inference_steps=steps, guidance_scale=guidance,
                         generator=generator, **options).images
    return pictures


def reference_scenes(count: int, seed: int) -> list[tuple[Scene, Scene]]:
    """(reference, target) pairs on one background; the target holds a single shape, for prompts that
    name it."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        reference = sample_scene(rng)
        pairs.append((reference, sample_scene(rng, count=1, background=reference.background)))
    return pairs


def background_share(images: list[Image.Image], scenes: list[Scene]) -> float:
    return sum(background_names(i) == s.background.names for i, s in zip(images, scenes, strict=True)) / len(scenes)


def quick_check(pipe: StableDiffusionPipeline, encoder: CLIPVisionModelWithProjection, settings: Settings) -> float:
    """The share of validation references whose background an empty prompt takes (10 steps, 128 px)."""
    references = [r for r, _ in reference_scenes(settings.eval_scenes, VALIDATION_SEED)]
    embeds = reference_embeds(encoder, [render(r, 128) for r in references])
    images = referenced(pipe, [""] * len(references), embeds, 128, VALIDATION_SEED, 10)
    return background_share(images, references)


def caption_for(scene: Scene, rng: random.Random, text_drop: float) -> str:
    return "" if rng.random() < text_drop else training_caption(scene, rng)


def train_adapter(pipe: StableDiffusionPipeline, encoder: CLIPVisionModelWithProjection, data: dict[int, dict],
                  settings: Settings, checkpoint: Path) -> UNet2DConditionModel:
    unet, text_encoder = pipe.unet.requires_grad_(False), pipe.text_encoder.requires_grad_(False)
    state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None
    start = split(state["net"]) if state else initial_adapter(unet, encoder.config.projection_dim, settings.seed)
    unet._load_ip_adapter_weights([start], low_cpu_mem_usage=False)
    params = adapter_parameters(unet)
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        log.info("adapter resumed at step %d", state["step"])

    def predict(draw: Draw, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        rng = draw.rng
        embeds = reference_embeds(encoder, [render(companion(s, rng), rng.choice((64, 128))) for s in draw.scenes])
        kept = torch.tensor([rng.random() >= settings.image_drop for _ in draw.scenes], dtype=embeds.dtype)
        with torch.no_grad():
            captions = [caption_for(s, rng, settings.text_drop) for s in draw.scenes]
            context = text_encoder(tokenize(pipe.tokenizer, captions))[0]
        # A dropped picture is a zero embedding, as diffusers gives the unconditional half of the batch.
        image_embeds = [(embeds * kept[:, None])[:, None]]
        return unet(noisy, timesteps, context, added_cond_kwargs={"image_embeds": image_embeds}).sample

    def check() -> float:
        with torch.no_grad():
            return quick_check(pipe, encoder, settings)

    def save(step: int, curve: list) -> None:
        save_state({"step": step, "net": adapter_state_dict(unet), "optimizer": optimizer.state_dict(),
                    "curve": curve}, checkpoint)

    train_steps(data, settings, params, optimizer, predict, check, save, state["step"] if state else 0,
                state["curve"] if state else [], log)
    return unet


# --- 4. export ---------------------------------------------------------------------------------


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float16: half the size, and what the server computes with on a GPU; on a CPU it loads them into
    float32."""
    return {key: value.detach().to(torch.float16).contiguous() for key, value in state.items()}


def encoder_config_file(weights: Path) -> Path:
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".config.json")


def export_encoder(encoder: CLIPVisionModelWithProjection, out: Path) -> None:
    """One .safetensors in transformers' keys, as real CLIP image encoders ship, and its config beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(half(encoder.state_dict()), out)
    encoder.config.to_json_file(encoder_config_file(out))
    log.info("saved the image encoder to %s", out)


def load_encoder(weights: Path) -> CLIPVisionModelWithProjection:
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig.from_json_file(encoder_config_file(weights)))
    encoder.load_state_dict(load_file(weights))
    return encoder.eval().requires_grad_(False)


def export_adapter(unet: UNet2DConditionModel, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(half(adapter_state_dict(unet)), out)
    log.info("saved the adapter to %s", out)


# --- 5. evaluate -------------------------------------------------------------------------------


def with_adapter(weights: Path) -> StableDiffusionPipeline:
    """The demo pipeline with the adapter loaded by diffusers' `load_ip_adapter`, as any h94 file is."""
    pipe = load_pipeline()
    pipe.load_ip_adapter(str(weights.parent), subfolder="", weight_name=weights.name, image_encoder_folder=None,
                         local_files_only=True)
    return pipe


def shape_prompt(scene: Scene) -> str:
    """Colour and kind of the target's one shape, nothing about the background: "a red circle"."""
    return shape_words(scene.shapes[0], with_size=False, with_position=False)


@dataclass
class Readings:
    background: list[bool]
    colour: list[bool]  # a region of the prompt's colour is there
    kind: list[bool]  # ... and the detector reads it as the prompt's shape

    def report(self) -> dict[str, float | int]:
        share = {"reference background": self.background}
        if self.colour:
            share |= {"prompt colour": self.colour, "prompt colour and shape": self.kind,
                      "prompt colour and reference background": [c and b for c, b in
                                                                 zip(self.colour, self.background, strict=True)]}
        return {name: round(sum(values) / len(values), 4) for name, values in share.items()} | {
            "pictures": len(self.background)}


def read(images: list[Image.Image], references: list[Scene], targets: list[Scene] | None, into: Readings) -> None:
    for i, (image, reference) in enumerate(zip(images, references, strict=True)):
        into.background.append(background_names(image) == reference.background.names)
        if targets is not None:
            shape = targets[i].shapes[0]
            found = find_shape(image, shape.colour)
            into.colour.append(found is not None)
            into.kind.append(found is not None and found[1] == shape.kind)


def evaluate(plain: StableDiffusionPipeline, adapted: StableDiffusionPipeline, encoder: CLIPVisionModelWithProjection,
             count: int, steps: int, style_scale: float, batch: int = 10) -> tuple[dict, list[Image.Image]]:
    pairs = reference_scenes(count, HELD_OUT_SEED)
    runs = {"empty prompt, reference at strength 1": (adapted, False, 1.0),
            "empty prompt, no reference (chance)": (plain, False, None),
            f"shape prompt, reference at strength {style_scale}": (adapted, True, style_scale),
            "shape prompt, reference at strength 1": (adapted, True, 1.0),
            "shape prompt, no reference (chance)": (plain, True, None)}
    readings = {name: Readings([], [], []) for name in runs}
    samples: list[Image.Image] = []
    for first in range(0, len(pairs), batch):
        chunk = pairs[first:first + batch]
        references, targets = [r for r, _ in chunk], [t for _, t in chunk]
        pictures = [render(r, 128) for r in references]
        embeds = reference_embeds(encoder, pictures)
        if first == 0:
            samples += pictures[:5]
        for name, (pipe, with_shape, scale) in runs.items():
            prompts = [shape_prompt(t) for t in targets] if with_shape else [""] * len(chunk)
            images = referenced(pipe, prompts, None if scale is None else embeds, 128, HELD_OUT_SEED + first, steps,
                                scale or 1.0)
            read(images, references, targets if with_shape else None, readings[name])
            if first == 0:
                samples += images[:5]
        log.info("evaluated %d / %d references", first + len(chunk), len(pairs))
    return {name: r.report() for name, r in readings.items()}, samples


def write_evaluation(settings: Settings, scenes: int, steps: int, style_scale: float, output: Path,
                     wall_minutes: dict) -> None:
    encoder = load_encoder(settings.encoder_out)
    plain, adapted = load_pipeline(), with_adapter(settings.adapter_out)
    started = time.monotonic()
    results, samples = evaluate(plain, adapted, encoder, scenes, steps, style_scale)
    files = (settings.encoder_out, settings.adapter_out)
    curves = {}
    for name in ("encoder", "adapter"):
        checkpoint = settings.workdir / f"{name}-checkpoint.pt"
        state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else {"curve": [], "step": None}
        curves[name] = {"steps": state["step"], "curve [step, share, seconds]": state["curve"]}
    report = {
        "model": {"adapter": ADAPTER_NAME, "encoder": ENCODER_NAME},
        "what": ("held-out references (one to three shapes on a flat, gradient or sky-and-ground background); "
                 "'reference background': the picture's top and bottom read as the reference's "
                 "(detect.background_names); the shape prompt names the colour and kind of one shape (drawn to "
                 "stand apart from that background) and nothing of the background; read by tools/demo_model/detect.py"),
        "targets": {"empty prompt, reference at strength 1: reference background": 0.8},
        "settings": {"scenes": scenes, "steps": steps, "guidance": 3.0, "side": 128,
                     "scheduler": type(plain.scheduler).__name__, "seed": HELD_OUT_SEED, "style_scale": style_scale},
        "results": results,
        "training": {**curves, "wall_minutes": wall_minutes},
        "safetensors_mb": {f.name: round(f.stat().st_size / 1e6, 3) for f in files},
        "parameters_millions": {name: round(sum(v.numel() for v in load_file(f).values()) / 1e6, 3)
                                for name, f in zip(("encoder", "adapter"), files, strict=True)},
        "hardware": hardware(),
        "evaluation_minutes": round((time.monotonic() - started) / 60, 1),
    }
    write_report(report, samples, 5, output)


SERVED_RESULTS = Path("bench/results/demo_reference_served.json")


def served_pictures(client: Client, prompts: list[str], references: list[Image.Image | None], mode: str,
                    strength: float, steps: int, seed: int) -> list[Image.Image]:
    """The demo model's pictures through a real server, the i-th at seed + i with the i-th reference."""
    pictures = []
    for i, (prompt, picture) in enumerate(zip(prompts, references, strict=True)):
        reference = []
        if picture is not None:
            data = picture.convert("RGBA").tobytes()
            image = ImagePayload(width=picture.width, height=picture.height, format="rgba8", data=data)
            reference = [Reference(image=image, mode=mode, strength=strength)]  # type: ignore[arg-type]
        result = client.generate(Generate(id=uuid.uuid4().hex, mode="txt2img", model=NAME, prompt=prompt,
                                          width=128, height=128, steps=steps, cfg_scale=3.0, scheduler="euler",
                                          seed=seed + i, reference=reference))
        made = result.images[0].image
        pictures.append(Image.frombytes("RGBA", (made.width, made.height), made.data).convert("RGB"))
    return pictures


def evaluate_served(count: int, steps: int, output: Path) -> None:
    """The held-out references again, through a real server serving the demo model alone (the server's own
    IP-Adapter code, not diffusers'), in each mode an artist picks."""
    from testing.serving import connected

    pairs = reference_scenes(count, HELD_OUT_SEED)
    runs = {"empty prompt, mode reference at strength 1": ("reference", 1.0, False),
            "empty prompt, no reference (chance)": (None, 0.0, False),
            "shape prompt, mode style at strength 1": ("style", 1.0, True),
            "shape prompt, mode style at strength 0.6 (the default)": ("style", 0.6, True),
            "shape prompt, mode reference at strength 0.6": ("reference", 0.6, True),
            "shape prompt, no reference (chance)": (None, 0.0, True)}
    readings = {name: Readings([], [], []) for name in runs}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder, connected([Path(folder) / "models"], Path(folder)) as client:
        references = [render(r, 128) for r, _ in pairs]
        for name, (mode, strength, with_shape) in runs.items():
            prompts = [shape_prompt(t) for _, t in pairs] if with_shape else [""] * len(pairs)
            given = references if mode is not None else [None] * len(pairs)
            images = served_pictures(client, prompts, given, mode or "reference", strength, steps, HELD_OUT_SEED)
            read(images, [r for r, _ in pairs], [t for _, t in pairs] if with_shape else None, readings[name])
            log.info("%s: %s", name, readings[name].report())
    report = {
        "what": "the held-out references of `evaluate`, generated through a real server (the demo model with its "
                "own adapter and encoder), 128 px, Euler, CFG 3",
        "targets": {"empty prompt, mode reference at strength 1: reference background": 0.8},
        "settings": {"scenes": count, "steps": steps, "seed": HELD_OUT_SEED},
        "results": {name: r.report() for name, r in readings.items()},
        "hardware": hardware(),
        "evaluation_minutes": round((time.monotonic() - started) / 60, 1),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def run(stage: str, settings: Settings, scenes: int, eval_steps: int, style_scale: float, results: Path) -> None:
    torch.set_num_threads(settings.threads)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    data_file = settings.workdir / "data.pt"
    encoder_checkpoint = settings.workdir / "encoder-checkpoint.pt"
    adapter_checkpoint = settings.workdir / "adapter-checkpoint.pt"
    times_file = settings.workdir / "wall-minutes.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}

    def timed(name: str, started: float) -> None:
        times[name] = round(times.get(name, 0) + (time.monotonic() - started) / 60, 1)
        times_file.write_text(json.dumps(times))

    if stage == "evaluate":
        write_evaluation(settings, scenes, eval_steps, style_scale, results, times)
        return
    if stage == "served":
        evaluate_served(scenes, eval_steps, SERVED_RESULTS)
        return
    encoder_file = settings.workdir / "encoder.safetensors"
    if stage in ("all", "encoder"):
        started = time.monotonic()
        export_encoder(train_encoder(settings, encoder_checkpoint), encoder_file)
        timed("encoder", started)
    if stage == "encoder":
        return
    pipe = load_pipeline()
    if stage in ("all", "data"):
        started = time.monotonic()
        # Plain containers of our own making (Scene objects): read back with weights_only=False.
        torch.save(build_data(pipe, settings), data_file)
        timed("data", started)
    if stage == "data":
        return
    encoder = load_encoder(encoder_file)
    if stage in ("all", "train"):
        started = time.monotonic()
        train_adapter(pipe, encoder, torch.load(data_file, weights_only=False), settings, adapter_checkpoint)
        timed("train", started)
    else:  # export: whatever the last checkpoint holds
        pipe.unet._load_ip_adapter_weights([split(torch.load(adapter_checkpoint, weights_only=True)["net"])],
                                           low_cpu_mem_usage=False)
    export_encoder(encoder, settings.encoder_out)
    export_adapter(pipe.unet, settings.adapter_out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", choices=("all", "encoder", "data", "train", "export", "evaluate", "served"),
                        default="all")
    parser.add_argument("--workdir", type=Path, default=Settings.workdir)
    parser.add_argument("--encoder-out", type=Path, default=Settings.encoder_out)
    parser.add_argument("--adapter-out", type=Path, default=Settings.adapter_out)
    parser.add_argument("--encoder-steps", type=int, default=Settings.encoder_steps)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--lr", type=float, default=Settings.lr)
    parser.add_argument("--text-drop", type=float, default=Settings.text_drop,
                        help="train: share of steps with an empty caption, besides training_caption's own 10%%")
    parser.add_argument("--threads", type=int, default=Settings.threads)
    parser.add_argument("--scenes", type=int, default=100, help="evaluate: held-out references")
    parser.add_argument("--eval-steps", type=int, default=20, help="evaluate: Euler steps")
    parser.add_argument("--style-scale", type=float, default=0.5, help="evaluate: the reduced strength")
    parser.add_argument("--results", type=Path, default=RESULTS, help="evaluate: the report to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings(workdir=args.workdir, encoder_out=args.encoder_out, adapter_out=args.adapter_out,
                        encoder_steps=args.encoder_steps, steps=args.steps, lr=args.lr, text_drop=args.text_drop,
                        threads=args.threads)
    run(args.stage, settings, args.scenes, args.eval_steps, args.style_scale, args.results)


if __name__ == "__main__":
    main()
