"""What a `train` request leaves out, per model family and kind: one table, easy to change.

The GPU rows follow what kohya sd-scripts and Invoke Training users set; the demo model's row is
sized to finish on a CPU in minutes (docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from shared.training import Train


@dataclass(frozen=True)
class Settings:
    steps: int
    learning_rate: float
    rank: int  # LoRA only
    resolution: int
    batch_size: int
    vectors: int  # embedding only: token vectors the trigger stands for
    train_text_encoder: bool  # LoRA only
    sample_every: int  # 0: no sample pictures
    checkpoint_every: int


_LORA = Settings(steps=1500, learning_rate=1e-4, rank=16, resolution=512, batch_size=1, vectors=1,
                 train_text_encoder=False, sample_every=250, checkpoint_every=250)
_EMBEDDING = replace(_LORA, steps=2000, learning_rate=5e-3)

# (family, kind) -> defaults; "demo" is the embedded demo model, whichever family it is.
DEFAULTS: dict[tuple[str, str], Settings] = {
    ("sd15", "lora"): _LORA,
    ("sd15", "embedding"): _EMBEDDING,
    ("sdxl", "lora"): replace(_LORA, resolution=1024, rank=16, learning_rate=1e-4),
    ("sdxl", "embedding"): replace(_EMBEDDING, resolution=1024, learning_rate=3e-3),
    # Measured on the demo model's new concept (docs/demo-model.md, "Teaching it a new concept"): its
    # LoRA learns a new shape only with the text encoder's adapters.
    ("demo", "lora"): Settings(steps=600, learning_rate=2e-3, rank=8, resolution=128, batch_size=8, vectors=1,
                               train_text_encoder=True, sample_every=100, checkpoint_every=100),
    ("demo", "embedding"): Settings(steps=1200, learning_rate=1e-2, rank=8, resolution=128, batch_size=8,
                                    vectors=1, train_text_encoder=False, sample_every=100, checkpoint_every=100),
}


def settings_for(request: Train, family: str, embedded: bool) -> Settings:
    """The defaults for the model's row, with what the request sets in their place."""
    base = DEFAULTS[("demo" if embedded else family, request.kind)]
    chosen = {f.name: getattr(request, f.name) for f in fields(Settings)
              if getattr(request, f.name, None) is not None}
    return replace(base, **chosen)
