"""One training in memory: its own copy of the base model with the adapter or embedding being learnt,
the dataset's latents, the optimizer and the random generator, advanced one optimizer step at a
time so the job can stop between any two (to let a painting job run, or to be cancelled).

Its own copy: the painting jobs that run in its pauses use the cached pipeline, untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from shared.training import Train

from ..models.entry import ModelEntry
from ..models.loading import load_pipeline
from . import checkpoints
from .dataset import Dataset
from .defaults import Settings
from .embedding import EmbeddingMethod
from .lora import LoraMethod

SAMPLE_STEPS = 20
SAMPLE_GUIDANCE = 5.0


class Training:
    def __init__(self, request: Train, entry: ModelEntry, settings: Settings, pictures: list[PIL.Image.Image],
                 device: torch.device, dtype: torch.dtype, seed: int):
        self.request = request
        self.entry = entry
        self.settings = settings
        self.device = device
        self.seed = seed
        self.step = 0
        # Half precision for the frozen weights on a GPU, the learnt ones in float32 under autocast.
        self.dtype = dtype if device.type == "cuda" else torch.float32
        self.pipe = load_pipeline(entry, self.dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, part, None)
            if module is not None:
                module.requires_grad_(False)
        self.sdxl = getattr(self.pipe, "text_encoder_2", None) is not None
        self.method: LoraMethod | EmbeddingMethod = (
            LoraMethod(self.pipe, settings.rank, settings.train_text_encoder, seed) if request.kind == "lora"
            else EmbeddingMethod(self.pipe, request.trigger, settings.vectors))
        if device.type == "cuda":
            self.pipe.unet.enable_gradient_checkpointing()
        self.noise_schedule = DDPMScheduler.from_config(self.pipe.scheduler.config)
        self.dataset = Dataset(request, pictures, settings.resolution, request.flip)
        self.optimizer = torch.optim.AdamW(self.method.parameters(), lr=settings.learning_rate, weight_decay=1e-2)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.generator = torch.Generator("cpu").manual_seed(seed)
        self._prompts: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    # --- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self) -> checkpoints.Checkpoint:
        return checkpoints.Checkpoint(step=self.step, adapter=self.method.state(),
                                      optimizer=self.optimizer.state_dict(), rng=self.generator.get_state())

    def restore(self, saved: checkpoints.Checkpoint) -> None:
        self.method.load_state({k: v.to(self.device) for k, v in saved.adapter.items()})
        self.optimizer.load_state_dict(saved.optimizer)
        self.generator.set_state(saved.rng)
        self.step = saved.step

    # --- one optimizer step ------------------------------------------------------------------------

    def train_step(self) -> float:
        """One optimizer step on one batch; returns its loss."""
        batch = self.dataset.batch(self.settings.batch_size, self.generator)
        latents = torch.cat([Dataset.latents(self.pipe, example, mirrored) for example, mirrored in batch])
        noise = torch.randn(latents.shape, generator=self.generator)
        steps = self.noise_schedule.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (len(batch),), generator=self.generator)
        noisy = self.noise_schedule.add_noise(latents, noise, timesteps)
        if self.noise_schedule.config.prediction_type == "v_prediction":
            target = self.noise_schedule.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        self.pipe.unet.train()
        with self._autocast():
            embeds, pooled = self._encode([example.caption for example, _ in batch])
            extra = {}
            if self.sdxl:
                extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": self._time_ids(batch)}
            prediction = self.pipe.unet(noisy.to(self.device, self.dtype), timesteps.to(self.device),
                                        embeds.to(self.dtype), **extra).sample
        loss = F.mse_loss(prediction.float(), target.to(self.device).float())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss.detach())

    def _autocast(self) -> Any:
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def _encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings of the captions (and SDXL's pooled ones); cached while the text does not learn."""
        if self.method.trains_text:
            return self._encode_now(captions)
        for text in captions:
            if text not in self._prompts:
                with torch.no_grad():
                    self._prompts[text] = self._encode_now([text])
        embeds = torch.cat([self._prompts[t][0] for t in captions])
        pooled = torch.cat([self._prompts[t][1] for t in captions]) if self.sdxl else None
        return embeds, pooled

    def _encode_now(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.sdxl:
            embeds, _, pooled, _ = self.pipe.encode_prompt(prompt=captions, device=self.device,
                                                           num_images_per_prompt=1, do_classifier_free_guidance=False)
            return embeds, pooled
        embeds, _ = self.pipe.encode_prompt(captions, self.device, 1, False)
        return embeds, None

    def _time_ids(self, batch: list[Any]) -> torch.Tensor:
        """SDXL's size conditioning: each picture's own size, no crop, its bucket as the target."""
        projection = self.pipe.text_encoder_2.config.projection_dim
        rows = [self.pipe._get_add_time_ids((ex.original[1], ex.original[0]), (0, 0), (ex.size[1], ex.size[0]),
                                            dtype=torch.float32, text_encoder_projection_dim=projection)
                for ex, _ in batch]
        return torch.cat(rows).to(self.device)

    # --- sample pictures ---------------------------------------------------------------------------

    def sample(self, stop: Callable[[], bool]) -> PIL.Image.Image | None:
        """A picture of the trigger as the model draws it now, always from the same seed; None when `stop()`
        turns true before it is done (a job waits, or a cancel), so a sample never holds them up."""
        side = self.settings.resolution
        prompt = self.request.trigger if self.request.kind == "embedding" else f"{self.request.trigger}, a picture"

        def check(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if stop():
                raise _SampleStopped
            return tensors

        self.pipe.unet.eval()
        try:
            with self._autocast(), torch.no_grad(), _rng_untouched():
                output = self.pipe(prompt=prompt, num_inference_steps=SAMPLE_STEPS, guidance_scale=SAMPLE_GUIDANCE,
                                   width=side, height=side, generator=torch.Generator("cpu").manual_seed(self.seed),
                                   callback_on_step_end=check)
        except _SampleStopped:
            return None
        return output.images[0]

    def state(self) -> dict[str, torch.Tensor]:
        return self.method.state()


class _SampleStopped(Exception):
    pass


@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        yield
