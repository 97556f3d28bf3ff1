"""Trains the demo model on a CPU: `python -m tools.demo_model.train [--stage STAGE]`.

1. vae       a small VAE learns to reconstruct generated pictures (L1 + MSE, tiny KL weight);
             `more-vae` goes on training the saved one.
2. latents   a fixed set of generated pictures at 64..256 px is encoded once, with its scenes.
3. unet      the UNet and the CLIP text encoder learn together (v-prediction on a scaled-linear
             noise schedule that leaves almost no signal at its end, EMA), checkpointing as they go;
             a rerun resumes (a larger --unet-steps goes on from the last checkpoint), `--init-from`
             starts from another run's weights. At the end the EMA weights are saved as a diffusers
             StableDiffusionPipeline in server/models/demo/model/.
4. export    saves the pipeline from the last checkpoint, e.g. to try a run in progress.

`all` runs 1 to 3. Every stage is seeded; intermediate files live in --workdir (default build/demo)."""

from __future__ import annotations

import argparse
import copy
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from server.models.demo import MODEL_DIR

from .components import make_sampling_scheduler, make_text_encoder, make_training_scheduler, make_unet, make_vae
from .data import Scene, render, sample_scene, training_caption
from .vocab import BOS, EOS, build_tokenizer, write_vocab_files

log = logging.getLogger("underpaint.demo.train")


@dataclass(frozen=True)
class Settings:
    workdir: Path = Path("build/demo")
    model_dir: Path = MODEL_DIR
    seed: int = 0
    threads: int = 2
    vae_steps: int = 1600
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    # pictures per side length encoded once for the UNet stage
    dataset: tuple[tuple[int, int], ...] = ((64, 16000), (128, 10000), (192, 3000), (256, 2000))
    # side length -> batch size, sized so that each step costs about the same
    batches: tuple[tuple[int, int], ...] = ((64, 64), (128, 24), (192, 12), (256, 8))
    side_weights: tuple[float, ...] = (0.3, 0.4, 0.15, 0.15)
    unet_steps: int = 10000
    unet_lr: float = 1e-3
    warmup: int = 150
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    init_from: Path | None = None  # a checkpoint to start the UNet and text encoder from


# --- 1. VAE ---------------------------------------------------------------------------------


def to_tensor(images: list) -> torch.Tensor:
    """PIL RGB pictures -> float tensor in [-1, 1], NCHW."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


def vae_batch(rng: random.Random, batch: int, crop: int = 32) -> torch.Tensor:
    """Crops of pictures drawn at 64 and 128 px, so that edges come at two scales."""
    images = []
    for i in range(batch):
        side = 64 if i % 2 == 0 else 128
        x, y = rng.randrange(0, side - crop + 1, 8), rng.randrange(0, side - crop + 1, 8)
        images.append(render(sample_scene(rng), side).crop((x, y, x + crop, y + crop)))
    return to_tensor(images)


def train_vae(settings: Settings, vae: AutoencoderKL | None = None) -> AutoencoderKL:
    """Trains a new VAE, or goes on training `vae`."""
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    vae = make_vae() if vae is None else vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.vae_lr, total_steps=settings.vae_steps)
    start = time.monotonic()
    for step in range(1, settings.vae_steps + 1):
        # Small crops are cheap; 64 px ones (half of them whole pictures) teach the borders.
        x = vae_batch(rng, settings.vae_batch) if step % 2 else vae_batch(rng, settings.vae_batch // 4, 64)
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(y, x) + F.mse_loss(y, x) + settings.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0:
            log.info("vae step %d/%d loss %.4f (%.0f s)", step, settings.vae_steps, loss.item(),
                     time.monotonic() - start)
    vae.eval()
    return vae


# --- 2. latents -----------------------------------------------------------------------------


@dataclass
class LatentSet:
    side: int
    latents: torch.Tensor  # N x 4 x side/8 x side/8, already multiplied by the scaling factor
    scenes: list[Scene]


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, settings: Settings) -> tuple[list[LatentSet], float]:
    """Posterior means of fixed pictures, and the scaling factor that gives them unit variance."""
    sets = []
    for side, count in settings.dataset:
        rng = random.Random(settings.seed * 1000 + side)
        scenes = [sample_scene(rng) for _ in range(count)]
        chunks = []
        for i in range(0, count, 64):
            pixels = to_tensor([render(scene, side) for scene in scenes[i : i + 64]])
            chunks.append(vae.encode(pixels).latent_dist.mean)
        sets.append(LatentSet(side, torch.cat(chunks), scenes))
        log.info("encoded %d pictures at %d px", count, side)
    scaling = 1.0 / torch.cat([s.latents.flatten() for s in sets]).std().item()
    for s in sets:
        s.latents *= scaling
    return sets, scaling


# --- 3. UNet + text encoder -----------------------------------------------------------------


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids


def cosine_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to a tenth of it at `total`. A pure function of the
    step, so a resumed run carries on where it stopped."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def learning_rate(step: int, settings: Settings) -> float:
    return cosine_rate(step, settings.unet_steps, settings.unet_lr, settings.warmup)


@dataclass
class Trainee:
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    ema_unet: UNet2DConditionModel
    ema_text_encoder: CLIPTextModel
    optimizer: torch.optim.Optimizer
    step: int = 0


def new_trainee(tokenizer: CLIPTokenizer, settings: Settings) -> Trainee:
    torch.manual_seed(settings.seed)
    unet = make_unet()
    text_encoder = make_text_encoder(len(tokenizer), tokenizer.convert_tokens_to_ids(EOS),
                                     tokenizer.convert_tokens_to_ids(BOS))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.unet_lr, weight_decay=1e-2)
    return Trainee(unet, text_encoder, copy.deepcopy(unet), copy.deepcopy(text_encoder), optimizer)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)


def save_checkpoint(trainee: Trainee, path: Path) -> None:
    state = {
        "step": trainee.step,
        "unet": trainee.unet.state_dict(),
        "text_encoder": trainee.text_encoder.state_dict(),
        "ema_unet": trainee.ema_unet.state_dict(),
        "ema_text_encoder": trainee.ema_text_encoder.state_dict(),
        "optimizer": trainee.optimizer.state_dict(),
    }
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def load_checkpoint(trainee: Trainee, path: Path) -> None:
    state = torch.load(path, weights_only=True)
    trainee.unet.load_state_dict(state["unet"])
    trainee.text_encoder.load_state_dict(state["text_encoder"])
    trainee.ema_unet.load_state_dict(state["ema_unet"])
    trainee.ema_text_encoder.load_state_dict(state["ema_text_encoder"])
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.step = state["step"]


def warm_start(trainee: Trainee, path: Path) -> None:
    """Starts from another run's EMA weights; layers that run lacked keep their fresh values."""
    state = torch.load(path, weights_only=True)
    for model, ema, key in ((trainee.unet, trainee.ema_unet, "ema_unet"),
                            (trainee.text_encoder, trainee.ema_text_encoder, "ema_text_encoder")):
        missing, unexpected = model.load_state_dict(state[key], strict=False)
        if unexpected:
            raise ValueError(f"--init-from: {path} has weights this model lacks: {unexpected[:3]}")
        ema.load_state_dict(model.state_dict())
        log.info("warm start of %s from %s (step %d); new: %s", key, path, state["step"], missing)


def train_unet(sets: list[LatentSet], tokenizer: CLIPTokenizer, settings: Settings,
               checkpoint: Path) -> Trainee:
    trainee = new_trainee(tokenizer, settings)
    if checkpoint.exists():
        load_checkpoint(trainee, checkpoint)
        log.info("resumed at step %d", trainee.step)
    elif settings.init_from is not None:
        warm_start(trainee, settings.init_from)
    noise_schedule = make_training_scheduler()
    batch_sizes = dict(settings.batches)
    by_side = {s.side: s for s in sets}
    # Seeded per step, so a resumed run draws the same batches as an uninterrupted one.
    start = time.monotonic()
    trainee.unet.train()
    trainee.text_encoder.train()
    while trainee.step < settings.unet_steps:
        step = trainee.step
        rng = random.Random(settings.seed * 7919 + step)
        generator = torch.Generator().manual_seed(settings.seed * 7919 + step)
        side = rng.choices([s.side for s in sets], weights=settings.side_weights)[0]
        latent_set = by_side[side]
        index = torch.randint(len(latent_set.scenes), (batch_sizes[side],), generator=generator)
        x0 = latent_set.latents[index]
        ids = tokenize(tokenizer, [training_caption(latent_set.scenes[i], rng) for i in index.tolist()])
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(index),),
                                  generator=generator)
        noisy = noise_schedule.add_noise(x0, noise, timesteps)
        for group in trainee.optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        prediction = trainee.unet(noisy, timesteps, trainee.text_encoder(ids)[0]).sample
        loss = F.mse_loss(prediction, noise_schedule.get_velocity(x0, noise, timesteps))
        trainee.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            list(trainee.unet.parameters()) + list(trainee.text_encoder.parameters()), 1.0
        )
        trainee.optimizer.step()
        # A short memory early on, so the average does not drag in the random initial weights.
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        update_ema(trainee.ema_unet, trainee.unet, decay)
        update_ema(trainee.ema_text_encoder, trainee.text_encoder, decay)
        trainee.step += 1
        if trainee.step % 25 == 0:
            log.info("unet step %d/%d side %d loss %.4f lr %.2e (%.0f s)", trainee.step, settings.unet_steps,
                     side, loss.item(), learning_rate(step, settings), time.monotonic() - start)
        if trainee.step % settings.checkpoint_every == 0 or trainee.step == settings.unet_steps:
            save_checkpoint(trainee, checkpoint)
    return trainee


# --- 4. export ------------------------------------------------------------------------------


def export(vae: AutoencoderKL, trainee: Trainee, tokenizer: CLIPTokenizer, model_dir: Path) -> None:
    """A standard SD pipeline folder: StableDiffusionPipeline.from_pretrained(model_dir) loads it."""
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=trainee.ema_text_encoder.eval(),
        tokenizer=tokenizer,
        unet=trainee.ema_unet.eval(),
        scheduler=make_sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(model_dir, safe_serialization=True)
    write_vocab_files(model_dir / "tokenizer")
    log.info("saved the pipeline to %s", model_dir)


def run(stage: str, settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    vae_dir = settings.workdir / "vae"
    latents_file = settings.workdir / "latents.pt"
    checkpoint = settings.workdir / "unet-checkpoint.pt"
    tokenizer = build_tokenizer(settings.workdir / "tokenizer")
    started = time.monotonic()

    if stage in ("all", "vae", "more-vae"):
        previous = AutoencoderKL.from_pretrained(vae_dir) if stage == "more-vae" else None
        train_vae(settings, previous).save_pretrained(vae_dir, safe_serialization=True)
    if stage in ("vae", "more-vae"):
        return
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()

    if stage in ("all", "latents"):
        sets, scaling = encode_dataset(vae, settings)
        # Plain containers: a class pickled from `python -m` would be named __main__.LatentSet.
        torch.save({"scaling": scaling, "sets": [vars(s) for s in sets]}, latents_file)
    if stage == "latents":
        return
    saved = torch.load(latents_file, weights_only=False)  # our own file: it holds Scene objects
    sets, scaling = [LatentSet(**s) for s in saved["sets"]], saved["scaling"]
    vae.register_to_config(scaling_factor=scaling)

    if stage == "export":  # whatever the last checkpoint holds, e.g. to look at a run in progress
        trainee = new_trainee(tokenizer, settings)
        load_checkpoint(trainee, checkpoint)
    else:
        trainee = train_unet(sets, tokenizer, settings, checkpoint)
    export(vae, trainee, tokenizer, settings.model_dir)
    log.info("stage %s done in %.1f min", stage, (time.monotonic() - started) / 60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "vae", "more-vae", "latents", "unet", "export"), default="all")
    parser.add_argument("--workdir", type=Path, default=Settings.workdir)
    parser.add_argument("--model-dir", type=Path, default=Settings.model_dir)
    parser.add_argument("--unet-steps", type=int, default=Settings.unet_steps)
    parser.add_argument("--vae-steps", type=int, default=Settings.vae_steps)
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start the unet stage from this checkpoint's weights (fresh optimizer)")
    parser.add_argument("--threads", type=int, default=Settings.threads,
                        help="torch threads; 2 suit an idle 2-core machine, but where other work shares the "
                             "cores 1 is faster: two threads that wait on each other slowed a step up to 6x")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings(workdir=args.workdir, model_dir=args.model_dir, unet_steps=args.unet_steps,
                        vae_steps=args.vae_steps, threads=args.threads, init_from=args.init_from)
    run(args.stage, settings)


if __name__ == "__main__":
    main()
