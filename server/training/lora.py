"""A LoRA being trained: peft adapters on the UNet's attention (and, if asked, the text encoders'),
saved in the kohya / A1111 key layout that A1111, ComfyUI, Invoke and diffusers all read."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.utils import convert_state_dict_to_kohya
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class LoraMethod:
    kind = "lora"

    def __init__(self, pipe: Any, rank: int, train_text_encoder: bool, seed: int):
        self.pipe = pipe
        self.rank = rank
        # Module name -> the model it adapts: the names are the prefixes diffusers and kohya expect.
        self.modules = {"unet": pipe.unet}
        if train_text_encoder:
            self.modules["text_encoder"] = pipe.text_encoder
            if getattr(pipe, "text_encoder_2", None) is not None:
                self.modules["text_encoder_2"] = pipe.text_encoder_2
        # alpha = rank: a scale of 1, which is also what the kohya file's `alpha` keys will say.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, module in self.modules.items():
                targets = UNET_TARGETS if name == "unet" else TEXT_TARGETS
                module.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
        for module in self.modules.values():
            for parameter in module.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()

    @property
    def trains_text(self) -> bool:
        return len(self.modules) > 1

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for module in self.modules.values() for p in module.parameters() if p.requires_grad]

    def state(self) -> dict[str, torch.Tensor]:
        """The adapters' tensors, by `<module>.<peft key>`: a checkpoint, and what `export` reads."""
        return {f"{name}.{key}": value.detach().float().cpu().contiguous()
                for name, module in self.modules.items()
                for key, value in get_peft_model_state_dict(module).items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, module in self.modules.items():
            prefix = f"{name}."
            own = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            set_peft_model_state_dict(module, own)


def export(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The LoRA file's tensors from `LoraMethod.state()`: kohya keys (lora_unet_…, lora_te_… for SD1.5,
    lora_te1_/lora_te2_… for SDXL), half precision as kohya saves them."""
    kohya = convert_state_dict_to_kohya(state)
    if family == "sd15":
        kohya = {k.replace("lora_te1_", "lora_te_", 1): v for k, v in kohya.items()}
    return {k: v.to(torch.float16).contiguous() if v.is_floating_point() else v.float()
            for k, v in sorted(kohya.items())}
