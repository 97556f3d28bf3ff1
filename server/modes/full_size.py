"""A picture refined at its full size, however large: img2img with the job's prompt, the UNet in
tiles once the picture is larger than the model's native square (tiled.py), the VAE in tiles
once it is larger than the VAE's (imaging/latents.py). Hires generate refines the enlarged native
picture this way, and an upscale with a strength its upscaled image (docs/upscale.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from ..imaging import frequencies, latents
from ..models.pipelines import Model, call_arguments
from .tiled import tile_side, tiled_unet


class Progress(Protocol):
    """How a mode that works in passes and tiles reports them (server/generate.py reports to the job)."""

    def stage(self, steps: int) -> None:
        """A pass of `steps` denoising steps begins (a pass without steps: 0)."""

    def tile(self, index: int, count: int) -> None:
        """Tile `index` of `count` is about to run; raises JobCancelledError once the job is cancelled."""


def refine(model: Model, pipe: DiffusionPipeline, arguments: dict[str, Any], pictures: Sequence[PIL.Image.Image],
           strength: float, progress: Progress, coarse: tuple[int, int]) -> Any:
    """`pictures` (one per image of the job, all of one size, multiples of the latent scale) refined at
    `strength` with the job's pipeline `arguments` (prompts, steps, guidance, generators, callbacks),
    keeping their content at the `coarse` size they were enlarged from (imaging/frequencies.py).
    Returns the pipeline's kind of output: latents where the arguments ask for them, else pictures."""
    width, height = pictures[0].size
    refiner = model.pipeline("img2img")
    # A sampler of the job's kind, fresh: samplers keep state from the pass before.
    refiner.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    # img2img runs int(steps * strength) of its steps: at least one, however few the job asked for.
    steps = max(arguments["num_inference_steps"], math.ceil(1 / strength))
    wanted = {**arguments, "num_inference_steps": steps, "strength": strength, "output_type": "latent"}
    with latents.tiled_vae(refiner.vae, width, height):
        if model.is_inpaint_model:
            # A 9-channel model repaints all of each picture, as its pipeline encodes them.
            wanted |= {"image": list(pictures), "mask_image": PIL.Image.new("L", (width, height), 255),
                       "width": width, "height": height}
        else:
            # Encoded here, so the pipeline takes latents and never holds the pictures as floats.
            progress.stage(0)
            wanted["image"] = torch.cat([latents.encode_in_tiles(refiner, picture, progress.tile)
                                         for picture in pictures])
        progress.stage(min(int(steps * strength), steps))
        with tiled_unet(refiner.unet, tile_side(model.native_side, model.latent_scale), progress.tile):
            output = refiner(**call_arguments(refiner, wanted))
    if arguments.get("output_type") == "latent":
        return output
    progress.stage(0)
    decoded = latents.decode_in_tiles(refiner.vae, output.images, progress.tile)
    kept = [frequencies.keep_coarse(new, old, coarse) for new, old in zip(decoded, pictures, strict=True)]
    return StableDiffusionPipelineOutput(images=kept, nsfw_content_detected=None)
