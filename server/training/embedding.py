"""A textual-inversion embedding being trained: new token vectors for the trigger in each text
encoder (SD1.5: one; SDXL: clip_l and clip_g), saved as A1111 reads them."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import BadInput


def encoders(pipe: Any) -> list[tuple[Any, Any]]:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def tokens(trigger: str, vectors: int) -> list[str]:
    """The tokens the trigger stands for, as diffusers' textual-inversion loader names them. Lower
    case: CLIP's tokenizer lower-cases text before it matches added tokens."""
    token = trigger.lower()
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def check_trigger(tokenizers: list[Any], trigger: str) -> None:
    """BadInput (field trigger) when a tokenizer already reads the trigger as one token of its own:
    training it would change that word everywhere instead of teaching a new one."""
    for tokenizer in tokenizers:
        pieces = tokenizer.tokenize(trigger)
        if len(pieces) == 1 or trigger.lower() in tokenizer.get_added_vocab():
            raise BadInput(f"trigger {trigger!r} is already a word of this model's vocabulary; choose a made-up "
                           "word (for example 'zqx" + trigger[:8].lower() + "')", "trigger")


class EmbeddingMethod:
    kind = "embedding"
    trains_text = True

    def __init__(self, pipe: Any, trigger: str, vectors: int):
        self.pipe = pipe
        self.tokens = tokens(trigger, vectors)
        self.vectors: list[torch.nn.Parameter] = []
        for tokenizer, text_encoder in encoders(pipe):
            table = text_encoder.get_input_embeddings()
            # Start from the trigger's own word pieces: deterministic, and a point the model knows.
            pieces = tokenizer(trigger, add_special_tokens=False).input_ids
            start = table.weight[pieces].detach().float().mean(0)
            tokenizer.add_tokens(self.tokens)
            ids = tokenizer.convert_tokens_to_ids(self.tokens)
            text_encoder.resize_token_embeddings(len(tokenizer))
            parameter = torch.nn.Parameter(start.repeat(vectors, 1).clone())
            self.vectors.append(parameter)
            text_encoder.get_input_embeddings().register_forward_hook(_substitute(ids, parameter))

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.vectors)

    def state(self) -> dict[str, torch.Tensor]:
        return {f"vectors.{i}": v.detach().float().cpu().contiguous() for i, v in enumerate(self.vectors)}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, vector in enumerate(self.vectors):
                vector.copy_(tensors[f"vectors.{i}"])


def _substitute(ids: list[int], vectors: torch.nn.Parameter) -> Any:
    """A forward hook on a token table: the new tokens' rows come from `vectors`, so only they learn."""

    def hook(module: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        for row, token_id in enumerate(ids):
            where = (inputs[0] == token_id).unsqueeze(-1)
            output = torch.where(where, vectors[row].to(output.dtype), output)
        return output

    return hook


def export(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The embedding file's tensors from `EmbeddingMethod.state()`: `emb_params` (SD1.5) or
    `clip_l` + `clip_g` (SDXL)."""
    if family == "sdxl":
        return {"clip_l": state["vectors.0"].contiguous(), "clip_g": state["vectors.1"].contiguous()}
    return {"emb_params": state["vectors.0"].contiguous()}
