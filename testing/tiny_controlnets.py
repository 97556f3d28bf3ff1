"""Tiny random-weight ControlNets for the tiny checkpoints of tiny_models.py, in every layout the
server loads (server/models/controlnets.py):

controlnet/tiny-sd15-scribble/                 diffusers folder (ControlNetModel)
controlnet/tiny-sd15-canny.safetensors         single file, diffusers keys, with its `<stem>.config/`
controlnet/tiny-sd15-depth.safetensors         single file, original (lllyasviel) keys, with its config
controlnet/tiny-sdxl-union/                    diffusers folder (ControlNetUnionModel, 8 control types)
controlnet/tiny-sdxl-lineart.safetensors       single file, diffusers keys
controlnet/old-pose.pth                        a pickle: refused unopened
annotators/tiny-depth-anything/                a Depth Anything of a tiny DINOv2, for `preprocess` depth

and, for `preprocess` pose, written where a test wants them: a tiny ViTPose (write_tiny_pose_model) and
a tiny RT-DETR person detector (write_tiny_person_detector).

A new ControlNet's output layers are zero, so it would change nothing; these get small random
ones, so a test sees what a control does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import ControlNetModel, ControlNetUnionModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file

from server.models.identify import UNET

from .ldm_layout import unet_key_to_ldm
from .tiny_models import MARKER, _unet, _written

CONDITIONING_CHANNELS = (4, 8, 8, 16)  # four stages: the control image is made 8 times smaller
OUTPUT_LAYERS = ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")


def _randomized(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.startswith(OUTPUT_LAYERS):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return net


def tiny_controlnet(family: str, seed: int = 0) -> ControlNetModel:
    torch.manual_seed(seed)
    unet = _unet(family, "regular")  # type: ignore[arg-type]
    return _randomized(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS),
                       seed)


def tiny_union_controlnet(seed: int = 0) -> ControlNetUnionModel:
    torch.manual_seed(seed)
    plain = ControlNetModel.from_unet(_unet("sdxl", "regular"),  # type: ignore[arg-type]
                                      conditioning_embedding_out_channels=CONDITIONING_CHANNELS)
    config = dict(plain.config, num_control_type=8, num_trans_channel=32, num_trans_head=2, num_proj_channel=32)
    return _randomized(ControlNetUnionModel.from_config(config), seed)


def original_layout(net: ControlNetModel) -> dict[str, torch.Tensor]:
    """`net`'s weights under lllyasviel's names, the inverse of diffusers' convert_controlnet_checkpoint."""
    layers = {diffusers: ldm for diffusers, ldm in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["layers"].items()}
    with_attention = frozenset(i for i, t in enumerate(net.config.down_block_types) if "CrossAttn" in t)
    out = {}
    for key, tensor in net.state_dict().items():
        if key in layers:
            name = layers[key]
        elif key.startswith("controlnet_cond_embedding.blocks."):
            index = int(key.split(".")[2])
            name = f"input_hint_block.{2 * (index + 1)}.{key.rsplit('.', 1)[1]}"
        elif key.startswith("controlnet_down_blocks."):
            index, param = key.split(".")[1:]
            name = f"zero_convs.{index}.0.{param}"
        elif key.startswith("controlnet_mid_block."):
            name = f"middle_block_out.0.{key.rsplit('.', 1)[1]}"
        else:
            name = unet_key_to_ldm(key, net.config.layers_per_block, with_attention).removeprefix(UNET)
        out["control_model." + name] = tensor.contiguous()
    return out


def _save_single(net: torch.nn.Module, path: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    save_file(weights or {k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    config = path.with_suffix(".config")
    config.mkdir(exist_ok=True)
    (config / "config.json").write_text(json.dumps(dict(net.config, _class_name=type(net).__name__)))


def write_tiny_controlnets(root: Path) -> dict[str, Path]:
    folder = root / "controlnet"
    paths = {
        "tiny-sd15-scribble": folder / "tiny-sd15-scribble",
        "tiny-sd15-canny": folder / "tiny-sd15-canny.safetensors",
        "tiny-sd15-depth": folder / "tiny-sd15-depth.safetensors",
        "tiny-sdxl-union": folder / "tiny-sdxl-union",
        "tiny-sdxl-lineart": folder / "tiny-sdxl-lineart.safetensors",
        "old-pose": folder / "old-pose.pth",
        "tiny-depth-anything": root / "annotators" / "tiny-depth-anything",
    }

    def write() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        tiny_controlnet("sd15", seed=1).save_pretrained(paths["tiny-sd15-scribble"])
        _save_single(tiny_controlnet("sd15", seed=2), paths["tiny-sd15-canny"])
        depth = tiny_controlnet("sd15", seed=3)
        _save_single(depth, paths["tiny-sd15-depth"], original_layout(depth))
        tiny_union_controlnet(seed=4).save_pretrained(paths["tiny-sdxl-union"])
        _save_single(tiny_controlnet("sdxl", seed=5), paths["tiny-sdxl-lineart"])
        paths["old-pose"].write_bytes(b"\x80\x04K\x01.")  # a pickle of 1: never opened
        write_tiny_depth_model(paths["tiny-depth-anything"])

    return _written(root, MARKER + "-controlnets", paths, write)


def write_tiny_depth_model(folder: Path) -> None:
    """Depth Anything's architecture on a tiny DINOv2, with the image processor of the real one at 56 px."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                 head_hidden_size=8, reassemble_hidden_size=32, patch_size=14)
    torch.manual_seed(6)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      resample=3).save_pretrained(folder)


def write_tiny_pose_model(folder: Path, confidence: float = 1.0) -> None:
    """ViTPose's architecture (COCO's 17 keypoints) on a tiny ViT, with the real one's image processor at
    64×48. Its heatmaps are `confidence` everywhere but for a faint random pattern: every keypoint
    scores about `confidence`, and lies where the pattern peaks for the picture."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessorPil

    backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, mlp_ratio=2, out_indices=[2])
    torch.manual_seed(7)
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17))
    with torch.no_grad():
        model.head.conv.weight.mul_(0.01)
        model.head.conv.bias.fill_(confidence)
    model.save_pretrained(folder)
    VitPoseImageProcessorPil(size={"height": 64, "width": 48}).save_pretrained(folder)


def write_tiny_person_detector(folder: Path) -> None:
    """RT-DETR's architecture on a tiny ResNet, labelled `person` and `cat` as COCO's are, with the real
    one's image processor at 64×64. It is made sure of a person at each of its two queries, in boxes
    most of the picture wide, so that each is posed."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessorPil, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                  layer_type="basic", out_features=["stage2", "stage3", "stage4"])
    config = RTDetrConfig(backbone_config=backbone, encoder_hidden_dim=16, encoder_in_channels=[16, 16, 16],
                          encoder_ffn_dim=16, encoder_attention_heads=2, d_model=16, num_queries=2,
                          decoder_in_channels=[16, 16, 16], decoder_ffn_dim=16, decoder_layers=1,
                          decoder_attention_heads=2, num_labels=2, id2label={0: "person", 1: "cat"},
                          label2id={"person": 0, "cat": 1})
    torch.manual_seed(8)
    model = RTDetrForObjectDetection(config)
    with torch.no_grad():
        model.model.decoder.class_embed[0].bias.copy_(torch.tensor([4.0, -4.0]))
        # Added to the anchors' logits (width and height about 0.05 of the picture's): most of it.
        model.model.decoder.bbox_embed[0].layers[2].bias.copy_(torch.tensor([0.0, 0.0, 4.5, 4.5]))
    model.save_pretrained(folder)
    RTDetrImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)
