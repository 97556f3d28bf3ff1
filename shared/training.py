"""Training messages: teach a checkpoint the artist's own character, object or style from their
pictures, as a LoRA or an embedding (docs/training.md).

`train` is answered like `generate`: `queued`, `progress` (with the loss, and a sample picture
now and then), then `result` naming the new model, or `cancelled` / `error`. The new file is in
`models` as soon as the result is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .errors import TOO_LARGE, ProtocolError, bad_request
from .messages import ID_LENGTH, MAX_SEED, NAME_LENGTH, PROMPT_LENGTH, Image, Limits
from .schema import spec

TrainingKind = Literal["lora", "embedding"]

# A handful of pictures is what the method is for (kohya and Invoke Training users bring 5-50).
MAX_TRAINING_IMAGES = 256
# A trigger is one word the artist types in prompts; a name is what `models` lists.
TRIGGER_LENGTH = 64
TRAINED_NAME_LENGTH = 64
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.")


@dataclass
class TrainingImage:
    image: Image = spec()
    # Without one: "<trigger>" (embedding) or "<trigger>, a picture" (LoRA).
    caption: str | None = spec(None, max_len=PROMPT_LENGTH)


@dataclass
class Train:
    """Settings left out (None) take the server's defaults for the model's family and the kind."""

    TYPE: ClassVar[str] = "train"
    id: str = spec(max_len=ID_LENGTH)
    kind: TrainingKind = spec()
    model: str = spec(max_len=NAME_LENGTH)  # the base checkpoint, as `models` names it
    name: str = spec(max_len=TRAINED_NAME_LENGTH)  # of the new LoRA or embedding
    trigger: str = spec(max_len=TRIGGER_LENGTH)
    images: list[TrainingImage] = spec(max_len=MAX_TRAINING_IMAGES)
    steps: int | None = spec(None, min=1, max=100_000)
    learning_rate: float | None = spec(None, min=0.0, max=1.0)
    rank: int | None = spec(None, min=1, max=256)  # LoRA only
    resolution: int | None = spec(None, min=64, max=4096)  # side of the training pictures' area
    batch_size: int | None = spec(None, min=1, max=64)
    train_text_encoder: bool | None = spec(None)  # LoRA only; None: the server's choice for the model
    flip: bool = spec(True)  # mirrored copies as augmentation
    seed: int | None = spec(None, min=0, max=MAX_SEED)
    # A sample picture with the trigger every this many steps (0: none), and a checkpoint on disk.
    sample_every: int | None = spec(None, min=0, max=100_000)
    checkpoint_every: int | None = spec(None, min=1, max=100_000)

    def check(self, limits: Limits) -> None:
        """Checks that involve more than one field (single fields are checked by the schema)."""
        if not self.images:
            raise bad_request("images", "train needs at least one picture")
        for i, item in enumerate(self.images):
            item.image.check(limits, f"images[{i}].image")
        total = sum(item.image.width * item.image.height for item in self.images)
        if total > limits.max_pixels * 4:
            raise ProtocolError(
                TOO_LARGE,
                f"the pictures have {total} pixels together, at most {limits.max_pixels * 4} allowed",
                "images",
            )
        if not self.name.strip() or not set(self.name) <= _NAME_CHARACTERS:
            raise bad_request("name", "name must be letters, digits, spaces, '-', '_' or '.'")
        if self.name.startswith("."):
            raise bad_request("name", "name must not start with '.'")
        if not self.trigger or any(c.isspace() for c in self.trigger):
            raise bad_request("trigger", "trigger must be one word (no spaces)")
        if self.kind == "embedding" and (self.rank is not None or self.train_text_encoder):
            field = "rank" if self.rank is not None else "train_text_encoder"
            raise bad_request(field, f"{field} applies to a LoRA, not an embedding")
