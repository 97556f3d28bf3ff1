"""IP-Adapters and the CLIP vision encoders they read pictures with: which pair serves a reference picture,
loading them, and pictures' image features, cached (docs/reference.md).

An IP-Adapter is a single `.safetensors` file as h94/IP-Adapter ships them: `image_proj.*` turns a picture's
image features into a few tokens, and `ip_adapter.<n>.to_k_ip/to_v_ip` give each cross-attention layer keys
and values of those tokens (conditioning/reference.py adds what its queries read from them). The features come
from a CLIP vision encoder (transformers' `CLIPVisionModelWithProjection` layout): a plain adapter takes the
projected image embedding, the others the penultimate hidden states. An adapter is paired with an installed
encoder that gives the feature of the width it takes.

A live session sends the same reference with every frame: the features of a picture are kept by (encoder,
hash of its pixels, feature) within a byte budget, so an unchanged reference runs no encoder.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.loaders.unet import UNet2DConditionLoadersMixin
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from ..errors import Unsupported
from .entry import Feature, ModelEntry
from .headers import safetensors_header
from .identify import CLIP_VISION_LAYERS, CLIP_VISION_WIDTH, IPADAPTER_LAYERS, IPADAPTER_PROJECTION, clip_vision_config
from .loaded import Loaded
from .registry import Registry

ADAPTERS = 4
ENCODERS = 2
# A ViT-H picture's hidden states are 257 x 1280 floats (1.3 MB); this keeps dozens of pictures' features.
CACHE_BYTES = 64 * 2**20
FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}
# Which adapters read a reference of each mode, the first installed first: the plain adapter is the
# standard one; a face needs one trained on faces.
VARIANTS = {"reference": ("plain", "plus"), "style": ("plain", "plus"), "composition": ("plain", "plus"),
            "face": ("face", "full_face")}


@dataclass
class Adapter:
    name: str
    variant: str
    feature: Feature  # what it takes of a picture
    projection: torch.nn.Module  # image features -> tokens [1, tokens, cross-attention width]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # (to_k_ip, to_v_ip) weights of each cross-attention layer

    @property
    def context_width(self) -> int:
        return self.layers[0][0].shape[1]


@dataclass
class Encoder:
    name: str
    key: str  # changes when its file does
    model: CLIPVisionModelWithProjection

    @property
    def side(self) -> int:
        return self.model.config.image_size


class IPAdapters:
    def __init__(self, registry: Registry, device: torch.device, dtype: torch.dtype, cache_bytes: int = CACHE_BYTES):
        self.registry = registry
        self.device = device
        self.dtype = dtype
        self.features = FeatureCache(cache_bytes)
        self._adapters = Loaded(registry, "IP-Adapter", self._load_adapter, ADAPTERS)
        self._encoders = Loaded(registry, "CLIP vision encoder", self._load_encoder, ENCODERS)

    def choose(self, mode: str, checkpoint: ModelEntry, name: str | None, field: str) -> tuple[ModelEntry, ModelEntry]:
        """The IP-Adapter named (it must be made for the checkpoint's family, and read faces for `face`), else
        the first installed that reads `mode` for it; and the encoder it reads pictures with. Unsupported
        naming `field` (`.mode` for a face) where none is installed, `.model` where the one named does not fit."""
        family = FAMILY_NAMES.get(checkpoint.family or "", "this model")
        if name is not None:
            entry = self.registry.get(name, "ipadapter", f"{field}.model")
            if entry.family != checkpoint.family or entry.embedded != checkpoint.embedded:
                made = FAMILY_NAMES.get(entry.family or "", "another model")
                raise Unsupported(f"IP-Adapter {name!r} is made for {made}, not {checkpoint.name} ({family})",
                                  f"{field}.model")
            if entry.variant not in VARIANTS[mode]:
                raise Unsupported(f"IP-Adapter {name!r} ({entry.variant}) does not read {mode} references; "
                                  f"{' or '.join(VARIANTS[mode])} adapters do", f"{field}.model")
            return entry, self._encoder_for(entry, f"{field}.model")
        usable = [e for e in self.registry.entries() if e.kind == "ipadapter" and not e.refused
                  and e.family == checkpoint.family and e.embedded == checkpoint.embedded]
        readers = sorted((e for e in usable if e.variant in VARIANTS[mode]),
                         key=lambda e: VARIANTS[mode].index(str(e.variant)))
        if not readers:
            if mode == "face":
                raise Unsupported(f"no face IP-Adapter (plus-face or full-face) for {family} is installed "
                                  "(ipadapter/ folder)", f"{field}.mode")
            raise Unsupported(f"no IP-Adapter for {family} is installed (ipadapter/ folder)", field)
        for entry in readers:
            encoder = self._paired(entry)
            if encoder is not None:
                return entry, encoder
        return readers[0], self._encoder_for(readers[0], field)

    def _paired(self, adapter: ModelEntry) -> ModelEntry | None:
        # The demo model's adapter reads with its own encoder, and a user's adapter with a user's.
        return next((e for e in self.registry.entries() if e.kind == "clip_vision" and not e.refused
                     and e.embedded == adapter.embedded and adapter.features[0] in e.features), None)

    def _encoder_for(self, adapter: ModelEntry, field: str) -> ModelEntry:
        encoder = self._paired(adapter)
        if encoder is None:
            what, width = adapter.features[0]
            feature = "hidden states" if what == "hidden" else "image embeddings"
            raise Unsupported(f"IP-Adapter {adapter.name!r} reads pictures with a CLIP vision encoder giving {feature} "
                              f"of width {width}, and none is installed (clip_vision/ folder)", field)
        return encoder

    def adapter(self, entry: ModelEntry, field: str) -> Adapter:
        """`entry` loaded (ModelBroken naming `field` where it cannot be), kept for the next jobs."""
        return self._adapters.get(entry, field)

    def encoder(self, entry: ModelEntry, field: str) -> Encoder:
        return self._encoders.get(entry, field)

    def _load_adapter(self, entry: ModelEntry) -> Adapter:
        weights = load_file(entry.path)
        projection = {k.removeprefix(IPADAPTER_PROJECTION): v for k, v in weights.items()
                      if k.startswith(IPADAPTER_PROJECTION)}
        # diffusers' conversion of the projection's names to its modules; it reads nothing of the UNet.
        module = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(
            None, projection, low_cpu_mem_usage=False)  # type: ignore[arg-type]
        numbers = sorted({int(k.split(".")[1]) for k in weights if k.startswith(IPADAPTER_LAYERS)})
        layers = [(weights[f"{IPADAPTER_LAYERS}{n}.to_k_ip.weight"].to(self.device, self.dtype),
                   weights[f"{IPADAPTER_LAYERS}{n}.to_v_ip.weight"].to(self.device, self.dtype)) for n in numbers]
        return Adapter(entry.name, str(entry.variant), entry.features[0],
                       module.to(self.device, self.dtype).eval().requires_grad_(False), layers)

    def _load_encoder(self, entry: ModelEntry) -> Encoder:
        shapes, _ = safetensors_header(entry.path)
        layers = 1 + max(int(k.split(".")[3]) for k in shapes if k.startswith(CLIP_VISION_LAYERS))
        config_path = clip_vision_config(entry.path, shapes[CLIP_VISION_WIDTH][0], layers)
        if config_path is None:
            raise ValueError("its config is gone")
        model = CLIPVisionModelWithProjection(CLIPVisionConfig.from_json_file(config_path))
        weights = load_file(entry.path)
        weights.pop("vision_model.embeddings.position_ids", None)  # a buffer older exports kept
        model.load_state_dict(weights, strict=True)
        return Encoder(entry.name, f"{entry.path}\0{entry.fingerprint()}",
                       model.to(self.device, self.dtype).eval().requires_grad_(False))

    def picture_features(self, encoder: Encoder, picture: PIL.Image.Image | None,
                         what: str) -> tuple[torch.Tensor, bool]:
        """`what` ("hidden" or "embeds") of `picture` (None: the unconditional picture, zeros after CLIP's
        normalisation, as IP-Adapter's training drops the picture) by `encoder`, and whether it came from
        the cache. [1, tokens, width] for hidden states, [1, width] for embeddings."""
        pixels = None if picture is None else np.asarray(picture.convert("RGB"))
        digest = "zero" if pixels is None else hashlib.blake2b(
            pixels.tobytes() + repr(pixels.shape).encode(), digest_size=16).hexdigest()
        key = (encoder.key, digest, what)
        found = self.features.get(key)
        if found is not None:
            return found, True
        side = encoder.side
        values = (torch.zeros(1, 3, side, side) if pixels is None else clip_pixels(picture, side))
        with torch.inference_mode():
            out = encoder.model(values.to(self.device, self.dtype), output_hidden_states=what == "hidden")
        made = out.hidden_states[-2] if what == "hidden" else out.image_embeds
        self.features.put(key, made)
        return made, False

    def unload(self) -> None:
        """Let go of every loaded adapter, encoder and cached feature (after the device ran out of memory)."""
        self._adapters.clear()
        self._encoders.clear()
        self.features.clear()


@functools.cache
def clip_processor(side: int) -> CLIPImageProcessor:
    """CLIP's own preprocessing at an encoder's size, as IP-Adapter's training and diffusers feed it: the short
    side scaled to `side` (bicubic), the centre square cut out, normalised."""
    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def clip_pixels(picture: PIL.Image.Image, side: int) -> torch.Tensor:
    """`picture` as a CLIP image encoder of `side` reads it: [1, 3, side, side]."""
    return clip_processor(side)(images=[picture.convert("RGB")], return_tensors="pt").pixel_values


class FeatureCache:
    """Pictures' image features, most recently used last, within `budget` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.budget:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.used += size
            while self.used > self.budget:
                _, dropped = self._items.popitem(last=False)
                self.used -= dropped.numel() * dropped.element_size()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0
