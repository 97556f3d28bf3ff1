"""What a model file or folder holds, read from its tensor names and shapes, never from its name.

Only a safetensors file's header is read; pickle files (`.ckpt`, `.pt`, `.bin`, `.pth`) are refused
unopened, since unpickling runs code from the file. A diffusers folder is read from its
model_index.json and UNet config.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

from .entry import Family, Kind, ModelEntry, Variant, is_valid_name
from .headers import HeaderTooLarge, NotRegularFile, read_json, safetensors_header

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".bin", ".pth"})
MAX_TRIGGER_WORDS = 5
PICKLE_REFUSED = (
    "pickle files (.ckpt, .pt, .bin, .pth) can run code when opened and are not loaded; "
    "use the .safetensors version of this model"
)
UNREADABLE = "cannot be read: the file is truncated or not a safetensors file"
NOT_REGULAR = "is not a regular file (a pipe, device or socket has the name of a model file)"
HEADER_TOO_LARGE = "its safetensors header is over 16 MiB, far more than any model's"

# Original (LDM) layout names a single-file checkpoint is recognised by.
UNET = "model.diffusion_model."
UNET_CONV_IN = UNET + "input_blocks.0.0.weight"
SDXL_LABEL_EMBEDDING = UNET + "label_emb.0.0.weight"
VAE_PREFIXES = ("first_stage_model.", "vae.")
SD15_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
SDXL_TEXT = "conditioner.embedders.0.transformer."
SDXL_TEXT_2 = "conditioner.embedders.1.model."
SDXL_REFINER_TEXT = "conditioner.embedders.0.model."

# Cross-attention width (text encoder output) of each family.
CONTEXT_WIDTH: dict[int, Family] = {768: "sd15", 2048: "sdxl"}
SD2_WIDTH = 1024

DIFFUSERS_PIPELINES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionImg2ImgPipeline": "sd15",
    "StableDiffusionInpaintPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
}


def identify_file(path: Path, kind_hint: Kind = "checkpoint") -> ModelEntry:
    """What a model file is. `kind_hint` (the folder it was found in) only names unrecognised files."""
    entry = ModelEntry(name=path.stem, kind=kind_hint, path=path, format="single_file", family=None)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return replace(entry, refused=PICKLE_REFUSED)
    try:
        identified = _identify_tensors(entry, _Header(*safetensors_header(path)))
    except NotRegularFile:
        return replace(entry, refused=NOT_REGULAR)
    except HeaderTooLarge:
        return replace(entry, refused=HEADER_TOO_LARGE)
    except Exception as exc:  # noqa: BLE001 - any failure to read the header means an unusable file
        log.warning("%s %s: %s", path, UNREADABLE, exc)
        return replace(entry, refused=UNREADABLE)
    if identified.refused is None and not is_valid_name(identified.name):
        return replace(identified, refused="its name contains '..'; rename the file")
    return identified


class _Header:
    """Tensor names, metadata and shapes of a safetensors file."""

    def __init__(self, shapes: dict[str, list[int]], metadata: dict[str, str]):
        self._shapes = shapes
        self.keys = frozenset(shapes)
        self.metadata = metadata

    def shape(self, key: str) -> list[int]:
        return self._shapes[key]

    def has_prefix(self, *prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in self.keys)


def _identify_tensors(entry: ModelEntry, header: _Header) -> ModelEntry:
    if header.has_prefix(UNET):
        return _identify_checkpoint(replace(entry, kind="checkpoint"), header)
    if CONTROLNET_HINT in header.keys or any(k.endswith(LDM_CONTROLNET_HINT) for k in header.keys):
        return _identify_controlnet(replace(entry, kind="controlnet"), header)
    if header.has_prefix(IPADAPTER_PROJECTION) and header.has_prefix(IPADAPTER_LAYERS):
        return _identify_ipadapter(replace(entry, kind="ipadapter"), header)
    if CLIP_VISION_PROJECTION in header.keys and header.has_prefix(CLIP_VISION):
        return _identify_clip_vision(replace(entry, kind="clip_vision"), header)
    if _is_lora(header.keys):
        return _identify_lora(replace(entry, kind="lora"), header)
    if _is_embedding(header.keys):
        return _identify_embedding(replace(entry, kind="embedding"), header)
    if "conv_in.weight" in header.keys or header.has_prefix("down_blocks."):
        return replace(entry, refused="holds a single diffusers component, not a whole checkpoint")
    return replace(entry, refused="not a Stable Diffusion checkpoint, LoRA, embedding, ControlNet or IP-Adapter")


def _identify_checkpoint(entry: ModelEntry, header: _Header) -> ModelEntry:
    if UNET_CONV_IN not in header.keys:
        return replace(entry, refused="not a Stable Diffusion 1.5 or SDXL checkpoint (unsupported architecture)")
    channels = header.shape(UNET_CONV_IN)[1]
    variant: Variant | None = {4: "regular", 9: "inpaint"}.get(channels)
    family: Family = "sdxl" if SDXL_LABEL_EMBEDDING in header.keys else "sd15"
    entry = replace(entry, family=family, variant=variant)
    if variant is None:
        return replace(entry, refused=f"its UNet takes {channels} input channels; 4 (regular) or 9 (inpaint) work")
    if header.has_prefix(SD2_TEXT):
        return replace(entry, family=None, refused="Stable Diffusion 2.x checkpoints are not supported")
    if header.has_prefix(SDXL_REFINER_TEXT) and not header.has_prefix(SDXL_TEXT):
        return replace(entry, refused="SDXL refiner checkpoints are not supported; use an SDXL base model")
    needed = (SDXL_TEXT, SDXL_TEXT_2) if family == "sdxl" else (SD15_TEXT,)
    if not all(header.has_prefix(p) for p in needed):
        return replace(entry, refused="has no text encoder weights; a whole checkpoint is needed")
    if not header.has_prefix(*VAE_PREFIXES):
        return replace(entry, refused="has no VAE weights; a whole checkpoint is needed")
    return entry


# A ControlNet's first layer, reading the control image: diffusers' name, and the original one (after
# an optional `control_model.`).
CONTROLNET_HINT = "controlnet_cond_embedding.conv_in.weight"
LDM_CONTROLNET_HINT = "input_hint_block.0.weight"
# Only diffusers' union ControlNets (one model, many kinds) have a task embedding.
UNION_KEY = "task_embedding"
# Words in a ControlNet's file or folder name that say what it reads (lllyasviel's, diffusers', xinsir's
# and A1111's names): the name is all a file says of it.
CONTROL_NAME_WORDS: dict[str, str] = {
    "scribble": "scribble", "sketch": "scribble",
    "lineart": "lineart", "line_art": "lineart", "anime": "lineart",
    "softedge": "softedge", "soft_edge": "softedge", "hed": "softedge", "pidi": "softedge",
    "canny": "canny", "edge": "canny",
    "depth": "depth", "midas": "depth", "zoe": "depth",
    "openpose": "pose", "pose": "pose",
    "tile": "tile", "blur": "tile",
}


def control_kinds(name: str) -> tuple[str, ...]:
    """The control kinds a (non-union) ControlNet's name tells, in a fixed order: `line_art` before
    `edge`, so "soft_edge" is not also read as canny's "edge"."""
    lowered = name.lower().replace("-", "_")
    found: list[str] = []
    for word in sorted(CONTROL_NAME_WORDS, key=len, reverse=True):
        if word in lowered:
            lowered = lowered.replace(word, " ")
            kind = CONTROL_NAME_WORDS[word]
            if kind not in found:
                found.append(kind)
    return tuple(sorted(found))


def _identify_controlnet(entry: ModelEntry, header: _Header) -> ModelEntry:
    # Like an SDXL UNet, an SDXL ControlNet embeds the pooled text and sizes with the timestep.
    sdxl = any(k.endswith(("add_embedding.linear_1.weight", "label_emb.0.0.weight")) for k in header.keys)
    width = next((header.shape(k)[-1] for k in sorted(header.keys) if k.endswith("attn2.to_k.weight")), None)
    if width == SD2_WIDTH:
        return replace(entry, refused="Stable Diffusion 2.x ControlNets are not supported")
    types = header.shape(UNION_KEY)[0] if UNION_KEY in header.keys else None
    return controlnet_kinds(replace(entry, family="sdxl" if sdxl else "sd15"), types)


def identify_controlnet_folder(folder: Path) -> ModelEntry:
    """A diffusers ControlNet folder: config.json and its safetensors weights."""
    entry = ModelEntry(name=folder.name, kind="controlnet", path=folder, format="diffusers", family=None)
    try:
        config = read_json(folder / "config.json")
    except (OSError, ValueError) as exc:
        return replace(entry, refused=f"its config.json cannot be read ({type(exc).__name__})")
    if config.get("_class_name") not in ("ControlNetModel", "ControlNetUnionModel"):
        return replace(entry, refused=f"{config.get('_class_name')} is not a ControlNet this server loads")
    if not _has_safetensors(folder):
        return replace(entry, refused="has no .safetensors weights (pickled weights are not loaded)")
    if config.get("cross_attention_dim") == SD2_WIDTH:
        return replace(entry, refused="Stable Diffusion 2.x ControlNets are not supported")
    family: Family = "sdxl" if config.get("addition_embed_type") == "text_time" else "sd15"
    if not is_valid_name(entry.name):
        return replace(entry, refused="its name contains '..'; rename the folder")
    union = config["_class_name"] == "ControlNetUnionModel"
    return controlnet_kinds(replace(entry, family=family), config.get("num_control_type", 6) if union else None)


def controlnet_kinds(entry: ModelEntry, union_types: int | None) -> ModelEntry:
    """`entry` with the kinds it reads: for a union model (`union_types` control types) each kind it has
    a type for, else those its name tells."""
    if union_types is not None:
        kinds = tuple(kind for kind, index in sorted(UNION_TYPES.items()) if index < union_types)
        return replace(entry, union=True, kinds=kinds)
    kinds = control_kinds(entry.name)
    if not kinds:
        return replace(entry, refused="its name does not say what it reads (scribble, lineart, softedge, canny, "
                                      "depth, pose or tile): rename it to include one")
    return replace(entry, kinds=kinds)


# The control kinds of a union ControlNet, as the index of its control type (xinsir's union and promax
# models: 0 pose, 1 depth, 2 soft edges and scribbles, 3 canny and line art, 6 tile).
UNION_TYPES: dict[str, int] = {"pose": 0, "depth": 1, "scribble": 2, "softedge": 2, "canny": 3, "lineart": 3,
                               "tile": 6}


# IP-Adapters as h94/IP-Adapter ships them: the image projection, and the key and value projections each
# cross-attention layer adds (`ip_adapter.<n>.to_k_ip.weight`).
IPADAPTER_PROJECTION = "image_proj."
IPADAPTER_LAYERS = "ip_adapter."
# CLIP vision encoders in transformers' `CLIPVisionModelWithProjection` layout.
CLIP_VISION = "vision_model."
CLIP_VISION_PROJECTION = "visual_projection.weight"
CLIP_VISION_WIDTH = "vision_model.post_layernorm.weight"


def _identify_ipadapter(entry: ModelEntry, header: _Header) -> ModelEntry:
    keys = header.keys
    to_k = next((k for k in sorted(keys) if k.startswith(IPADAPTER_LAYERS) and k.endswith(".to_k_ip.weight")), None)
    if to_k is None:
        return replace(entry, refused="has no ip_adapter.<n>.to_k_ip weights: not an IP-Adapter this server reads")
    width = header.shape(to_k)[-1]
    if width == SD2_WIDTH:
        return replace(entry, refused="Stable Diffusion 2.x IP-Adapters are not supported")
    family = CONTEXT_WIDTH.get(width) or _base_model_family(header.metadata.get("ss_base_model_version", ""))
    entry = replace(entry, family=family)
    if "image_proj.latents" in keys:  # a Resampler: 16 tokens from the penultimate hidden states
        variant: Variant = "face" if "face" in entry.name.lower() else "plus"
        return replace(entry, variant=variant, features=(("hidden", header.shape("image_proj.proj_in.weight")[-1]),))
    if "image_proj.proj.0.weight" in keys and "image_proj.proj.3.weight" in keys:  # an MLP over every hidden state
        return replace(entry, variant="full_face", features=(("hidden", header.shape("image_proj.proj.0.weight")[-1]),))
    if {"image_proj.proj.weight", "image_proj.norm.weight"} <= keys:  # 4 tokens from the image embedding
        return replace(entry, variant="plain", features=(("embeds", header.shape("image_proj.proj.weight")[-1]),))
    return replace(entry, refused="its image projection is of a kind this server does not read (FaceID adapters "
                                  "need a face model; plain, plus, plus-face and full-face adapters work)")


def _identify_clip_vision(entry: ModelEntry, header: _Header) -> ModelEntry:
    if CLIP_VISION_WIDTH not in header.keys:
        return replace(entry, refused="a CLIP vision model without its final layer norm")
    hidden = header.shape(CLIP_VISION_WIDTH)[0]
    layers = 1 + max((int(k.split(".")[3]) for k in header.keys if k.startswith(CLIP_VISION_LAYERS)), default=-1)
    if clip_vision_config(entry.path, hidden, layers) is None:
        return replace(entry, refused=f"a CLIP vision model of width {hidden} and {layers} layers is neither ViT-H/14 "
                                      f"nor ViT-bigG/14: put its config.json beside it as {entry.name}.config.json")
    return replace(entry, features=(("hidden", hidden), ("embeds", header.shape(CLIP_VISION_PROJECTION)[0])))


CLIP_VISION_LAYERS = "vision_model.encoder.layers."
# The image encoders IP-Adapters are trained with, by (width, layers): OpenCLIP ViT-H/14 (SD1.5 adapters and
# SDXL's "vit-h" ones) and ViT-bigG/14 (SDXL's others). Attention heads are not in a file's shapes, so any
# other encoder needs its transformers config beside it.
CLIP_VISION_CONFIGS = {(1280, 32): "vit-h-14.json", (1664, 48): "vit-bigg-14.json"}
CLIP_VISION_CONFIG_FOLDER = Path(__file__).resolve().parent / "configs" / "clip_vision"


def clip_vision_config(path: Path, hidden: int, layers: int) -> Path | None:
    """The config of the CLIP vision model in `path`: its own `<stem>.config.json`, else the shipped one of its
    (width, layers); None without either."""
    own = path.with_suffix(".config.json")
    if own.is_file():
        return own
    shipped = CLIP_VISION_CONFIGS.get((hidden, layers))
    return CLIP_VISION_CONFIG_FOLDER / shipped if shipped else None


LORA_MARKERS = (".lora_down.", ".lora_A.", ".lora.down.", ".hada_w1_a", ".lokr_w1")


def _is_lora(keys: frozenset[str]) -> bool:
    return any(k.startswith(("lora_unet_", "lora_te")) or any(m in k for m in LORA_MARKERS) for k in keys)


def _identify_lora(entry: ModelEntry, header: _Header) -> ModelEntry:
    entry = replace(entry, trigger_words=trigger_words(header.metadata))
    width = _lora_context_width(header)
    if width == SD2_WIDTH:
        return replace(entry, refused="Stable Diffusion 2.x LoRAs are not supported")
    family = CONTEXT_WIDTH.get(width) if width is not None else None
    if family is None:
        keys = header.keys
        if any(k.startswith(("lora_te1_", "lora_te2_")) or "text_encoder_2." in k for k in keys):
            family = "sdxl"
        elif any(k.startswith("lora_te_") or k.startswith("text_encoder.") for k in keys):
            family = "sd15"
        elif any(k.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_")) for k in keys):
            # kohya names SDXL UNet layers in the original layout, SD1.5 ones in the diffusers layout.
            family = "sdxl"
        else:
            # What the trainer recorded (kohya's key, which ours writes too): a LoRA of a model whose
            # text width is its own, such as the embedded demo model, has no other sign of its family.
            family = _base_model_family(header.metadata.get("ss_base_model_version", ""))
    return replace(entry, family=family)


def _base_model_family(version: str) -> Family | None:
    if version.startswith("sdxl"):
        return "sdxl"
    return "sd15" if version.startswith("sd_v1") else None


def _lora_context_width(header: _Header) -> int | None:
    """Input width of a LoRA on a cross-attention key projection: the text encoders' output width."""
    for key in sorted(header.keys):
        if "attn2" in key and "to_k" in key and key.endswith(("lora_down.weight", "lora_A.weight", "down.weight")):
            return header.shape(key)[-1]
    return None


def _is_embedding(keys: frozenset[str]) -> bool:
    return "emb_params" in keys or {"clip_l", "clip_g"} <= keys or any(k.startswith("string_to_param") for k in keys)


def _identify_embedding(entry: ModelEntry, header: _Header) -> ModelEntry:
    if {"clip_l", "clip_g"} <= header.keys:
        return replace(entry, family="sdxl")
    key = "emb_params" if "emb_params" in header.keys else min(k for k in header.keys if k.startswith("string_to"))
    if header.shape(key)[-1] == SD2_WIDTH:
        return replace(entry, refused="Stable Diffusion 2.x embeddings are not supported")
    return replace(entry, family="sd15")


def trigger_words(metadata: dict[str, str]) -> tuple[str, ...]:
    """A LoRA's trigger words: its stated trigger phrase, else the tags it was trained with most."""
    phrase = metadata.get("modelspec.trigger_phrase", "")
    if phrase.strip():
        return tuple(w.strip() for w in phrase.split(",") if w.strip())[:MAX_TRIGGER_WORDS]
    try:
        datasets = json.loads(metadata.get("ss_tag_frequency", "{}"))
        counts: Counter[str] = Counter()
        for tags in datasets.values():
            counts.update({tag.strip(): int(n) for tag, n in tags.items() if tag.strip()})
    except (ValueError, TypeError, AttributeError):
        return ()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(tag for tag, _ in ranked[:MAX_TRIGGER_WORDS])


def identify_folder(folder: Path, name: str | None = None) -> ModelEntry:
    """What a diffusers folder holds, from model_index.json and the UNet config."""
    entry = ModelEntry(name=name or folder.name, kind="checkpoint", path=folder, format="diffusers", family=None)
    try:
        index = read_json(folder / "model_index.json")
        unet = read_json(folder / "unet" / "config.json")
    except (OSError, ValueError) as exc:
        return replace(entry, refused=f"its diffusers configs cannot be read ({type(exc).__name__})")
    pipeline = index.get("_class_name")
    family = DIFFUSERS_PIPELINES.get(pipeline) if isinstance(pipeline, str) else None
    if family is None:
        return replace(entry, refused=f"{pipeline} models are not supported; SD1.5 and SDXL are")
    channels = unet.get("in_channels")
    variant: Variant | None = {4: "regular", 9: "inpaint"}.get(channels) if isinstance(channels, int) else None
    entry = replace(entry, family=family, variant=variant)
    if variant is None:
        return replace(entry, refused=f"its UNet takes {channels} input channels; 4 (regular) or 9 (inpaint) work")
    if unet.get("cross_attention_dim") == SD2_WIDTH:
        return replace(entry, family=None, refused="Stable Diffusion 2.x models are not supported")
    components = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for component in components:
        if (index.get(component) or [None])[0] is None:
            reason = f"has no {component}; SDXL refiners and partial models are not supported"
            return replace(entry, refused=reason)
        if not _has_safetensors(folder / component):
            reason = f"has no .safetensors weights for {component} (pickled weights are not loaded)"
            return replace(entry, refused=reason)
    if not is_valid_name(entry.name):
        return replace(entry, refused="its name contains '..'; rename the folder")
    return entry


def _has_safetensors(folder: Path) -> bool:
    return folder.is_dir() and (any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")))


# Tensors every diffusers `AutoencoderTiny` has: the first convolution of its encoder and of its decoder.
TINY_AUTOENCODER_KEYS = frozenset({"encoder.layers.0.weight", "decoder.layers.0.weight"})
TINY_AUTOENCODER_CLASSES = frozenset({"AutoencoderTiny", "AutoencoderTinyKL"})


def is_tiny_autoencoder(path: Path) -> bool:
    """A diffusers `AutoencoderTiny` (or the demo model's `AutoencoderTinyKL`): a folder with its config
    and safetensors weights, or the weights file alone (TAESD's and TAESDXL's config is the class's
    defaults)."""
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            return False
        try:
            shapes, _ = safetensors_header(path)  # a regular file's header only, within its size cap
        except (OSError, ValueError):
            return False
        return TINY_AUTOENCODER_KEYS <= shapes.keys()
    try:
        config = read_json(path / "config.json")
    except (OSError, ValueError):
        return False
    return config.get("_class_name") in TINY_AUTOENCODER_CLASSES and any(path.glob("*.safetensors"))
