"""Control images: ControlNets run beside the UNet and add to its features (docs/control.md).

Each control's image lies on the canvas like the request's image; it is cut to the mode's frame and
scaled to the generation size, so it lines up with the picture wherever the mode crops (an inpaint
selection, a live frame). The UNet's forward is wrapped for the job, as for tiles and regions, so
every pipeline a mode uses takes controls without a ControlNet pipeline of its own. A control runs
only at the steps within its [start, end] share (diffusers' `controlnet_keep`), and not at all at
strength 0: outside its range a step costs what it costs without it. It acts on the picture it was
placed for: with full detail, the native picture whose composition the refine then keeps; in an
upscale's refine, the enlarged picture, tile by tile (tile.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch

from shared.crop import Rect
from shared.messages import Control

from ..imaging import payloads
from ..models.controlnets import ControlNets, Net
from ..models.entry import ModelEntry
from ..models.identify import UNION_TYPES
from . import tile
from .steps import StepCounter, covers

# Kinds whose image is lines: a ControlNet reads them as light lines on black.
LINE_KINDS = frozenset({"scribble", "lineart", "softedge", "canny"})


def line_picture(picture: PIL.Image.Image) -> PIL.Image.Image:
    """Light lines on black, as line ControlNets are trained on, from what an artist draws: strokes on a
    transparent layer (their coverage is the line), dark lines on light paper (inverted), or light
    lines on black already (kept)."""
    rgba = np.asarray(picture.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    if alpha.min() < 1.0:
        lines = alpha
    else:
        luminance = rgba[..., :3].mean(axis=-1) / 255.0
        lines = 1.0 - luminance if luminance.mean() > 0.5 else luminance
    return PIL.Image.fromarray(np.round(lines * 255).astype(np.uint8), "L").convert("RGB")


def placed(picture: PIL.Image.Image, at: tuple[int, int], frame: Rect, size: tuple[int, int]) -> PIL.Image.Image:
    """`picture` (canvas position `at`) cut to `frame` and scaled to `size`; black where it does not reach."""
    canvas = PIL.Image.new("RGB", (frame.width, frame.height))
    canvas.paste(picture.convert("RGB"), (at[0] - frame.x, at[1] - frame.y))
    return canvas if canvas.size == size else canvas.resize(size, PIL.Image.Resampling.BICUBIC)


@dataclass
class ActiveControl:
    name: str  # the ControlNet's
    kind: str
    net: Net
    hint: torch.Tensor  # [1, 3, height, width], 8-bit (a quarter of floats' memory), at generation size
    strength: float
    start: float
    end: float
    latent_size: tuple[int, int]  # (width, height) of the latents generated at that size

    def covers(self, step: int, steps: int) -> bool:
        """Whether it runs at `step` of `steps`: the step lies wholly within [start, end]."""
        return covers(step, steps, self.start, self.end)

    def hint_for(self, sample: torch.Tensor) -> torch.Tensor | None:
        """The control image under `sample`: all of it for the picture it was placed for, its part under
        a tile of that picture; None for any other picture (a later pass at another size)."""
        size = (sample.shape[-1], sample.shape[-2])
        if size == self.latent_size:
            return self.hint
        under = tile.current()
        if under is None or (under.width, under.height) != self.latent_size:
            return None
        box, scale = under.box, self.hint.shape[-1] // self.latent_size[0]
        return self.hint[..., box.y * scale:box.bottom * scale, box.x * scale:box.right * scale]

    def residuals(self, sample: torch.Tensor, hint: torch.Tensor, timestep: Any, context: torch.Tensor,
                  extra: dict[str, Any]) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        hint = (hint.to(sample.device, self.net.dtype) / 255).expand(sample.shape[0], -1, -1, -1)
        arguments: dict[str, Any] = {"controlnet_cond": hint, "conditioning_scale": self.strength}
        if getattr(self.net.config, "num_control_type", None) is not None:  # a union model
            index = UNION_TYPES[self.kind]
            types = torch.zeros(sample.shape[0], self.net.config.num_control_type, device=sample.device,
                                dtype=self.net.dtype)
            types[:, index] = 1
            arguments |= {"controlnet_cond": [hint], "control_type": types, "control_type_idx": [index],
                          "conditioning_scale": [self.strength]}
        down, mid = self.net(sample.to(self.net.dtype), timestep, encoder_hidden_states=context.to(self.net.dtype),
                             return_dict=False, **arguments, **extra)
        return down, mid


@dataclass
class Controls(StepCounter):
    """The job's active controls, and the step the pipeline is at (set by `on_step_end`)."""

    items: list[ActiveControl]

    def info(self) -> dict[str, Any]:
        return {"controls": [{"kind": c.kind, "model": c.name, "strength": c.strength, "start": c.start,
                              "end": c.end} for c in self.items]}


def prepare(controls: Sequence[Control], frame: Rect, size: tuple[int, int], latent_size: tuple[int, int],
            checkpoint: ModelEntry, controlnets: ControlNets) -> Controls | None:
    """The request's controls with their ControlNets loaded and images placed over `frame` at `size`
    (the generation size, whose latents are `latent_size`); None without any that acts (strength 0
    acts on nothing)."""
    active = []
    for i, control in enumerate(controls):
        where = f"control[{i}]"
        entry = controlnets.choose(control.kind, checkpoint, control.model, where)
        if control.strength == 0:
            continue
        picture = payloads.to_pil(control.image, f"{where}.image")
        if control.kind in LINE_KINDS:
            picture = line_picture(picture)
        pixels = np.asarray(placed(picture, (control.image.x, control.image.y), frame, size))
        hint = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]
        net = controlnets.get(entry, f"{where}.model")
        active.append(ActiveControl(entry.name, control.kind, net, hint, control.strength, control.start, control.end,
                                    latent_size))
    return Controls(active) if active else None


@contextmanager
def applied(pipe: Any, controls: Controls | None, global_tokens: int | None = None) -> Iterator[None]:
    """Within the block, `pipe.unet` adds the residuals of each control that covers the current step.
    With regional prompts the ControlNets read the global prompt (its first `global_tokens` tokens):
    the regions' masks restrict the UNet's attention, not theirs."""
    if controls is None:
        yield
        return
    unet = pipe.unet
    forward = unet.forward

    def controlled(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        steps = controls.total(pipe)
        running = [(c, hint) for c in controls.items if c.covers(controls.step, steps)
                   and (hint := c.hint_for(sample)) is not None]
        if running:
            context = kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[0]
            if global_tokens is not None:
                context = context[:, :global_tokens]
            extra = {key: kwargs[key] for key in ("added_cond_kwargs", "timestep_cond") if kwargs.get(key) is not None}
            # A 9-channel inpaint UNet's input carries the mask and masked picture after the latents.
            latents = sample[:, :4]
            down: list[torch.Tensor] | None = None
            mid: torch.Tensor | None = None
            for control, hint in running:
                more_down, more_mid = control.residuals(latents, hint, timestep, context, extra)
                down = list(more_down) if down is None else [a + b for a, b in zip(down, more_down, strict=True)]
                mid = more_mid if mid is None else mid + more_mid
            kwargs["down_block_additional_residuals"] = [d.to(sample.dtype) for d in down]
            kwargs["mid_block_additional_residual"] = mid.to(sample.dtype)
        return forward(sample, timestep, *args, **kwargs)

    unet.forward = controlled
    try:
        yield
    finally:
        # A full-detail refine's tiles (modes/tiled.py) may have taken the forward off already.
        unet.__dict__.pop("forward", None)

