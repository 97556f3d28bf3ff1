"""upscale: the request's image `scale` times larger each way, by an upscaler model in tiles (or
Lanczos without one), and with a `strength`, refined at that size with the prompt (full_size.py).

Control images (a tile ControlNet above all) steer the refine: they are given on the canvas as it is
and stretched over the enlarged picture, then cut to each tile with it (conditioning/tile.py).

The result lies where the image lies on a canvas scaled by the same factor: the plugin scales the
canvas as Krita's Scale Image does and adds the result as a layer (docs/upscale.md).
"""

from __future__ import annotations

from typing import Any

from diffusers import DiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from shared.crop import Rect
from shared.messages import Generate

from ..errors import BadInput
from ..imaging.sizing import round_to_multiple
from ..models.pipelines import Model
from ..models.upscalers import Upscalers
from . import full_size
from .base import Frame, WholePicture
from .full_size import Progress


class Upscale(WholePicture):
    name = "upscale"
    pipeline = "img2img"
    default_strength = 0.0  # no refine unless the request gives a strength

    @staticmethod
    def check(request: Generate) -> None:
        if request.autoencoder == "tiny":
            raise BadInput("an upscale is decoded by the full VAE; leave autoencoder at auto or full", "autoencoder")
        if request.control and not request.strength:
            raise BadInput("control images steer the refine: give the upscale a strength above 0", "control")
        if request.reference and not request.strength:
            raise BadInput("reference pictures steer the refine: give the upscale a strength above 0", "reference")

    def __init__(self, request: Generate, model: Model, upscalers: Upscalers | None = None):
        super().__init__(request, model, upscalers)
        image, scale = request.image, request.scale
        width, height = image.width * scale, image.height * scale
        # Refined, the picture is generated at a multiple of the latent scale; finish() fits it back.
        multiple = model.latent_scale if self.strength > 0 else 1
        self.frame = Frame(Rect(image.x * scale, image.y * scale, width, height),
                           round_to_multiple(width, multiple), round_to_multiple(height, multiple))

    def denoise(self, pipe: DiffusionPipeline, arguments: dict[str, Any], progress: Progress) -> Any:
        enlarged, self.enlarged_by = self.enlarge([self.flattened()], (self.frame.width, self.frame.height),
                                                  self.request.upscaler, progress)
        pictures = enlarged * arguments["num_images_per_prompt"]
        if self.strength == 0:
            return StableDiffusionPipelineOutput(images=pictures, nsfw_content_detected=None)
        return full_size.refine(self.model, pipe, {**arguments, "output_type": "pil"}, pictures, self.strength,
                                progress, self.source.size)

    @property
    def request_area(self) -> Rect:
        image = self.request.image
        return Rect(image.x, image.y, image.width, image.height)

    def describe(self) -> dict[str, Any]:
        return {"scale": self.request.scale, "upscaler": self.enlarged_by,
                "refine_strength": self.strength or None}
