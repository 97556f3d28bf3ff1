"""Training a LoRA or an embedding from the artist's own pictures, without Krita or Qt: what the Train
dialog's choices mean, the `train` request built from them, and a training run as the dialog shows
it (docs/plugin.md, "Train").

The pictures arrive already read and shrunk (document.py and qimage.py do that with Krita and Qt):
a picture is sent at most `training_side(...)` squared pixels, so a 4k canvas costs the connection
about 1 MB, not 64 MB. The run keeps the loss of each step for the curve (at most MAX_LOSSES
points, thinned as it grows) and the newest sample picture.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Protocol

from shared.messages import Cancelled, Error, Image, Limits, ModelInfo, Progress, Queued, Result
from shared.training import MAX_TRAINING_IMAGES, TRAINED_NAME_LENGTH, TRIGGER_LENGTH, Train, TrainingImage, TrainingKind

from .errors import (
    CONNECTION_LOST,
    NO_MODEL,
    NO_PICTURES,
    NO_TRIGGER,
    PICTURES_TOO_LARGE,
    SERVER_CHANGED,
    TOO_MANY_PICTURES,
    TRIGGER_ONE_WORD,
    UserError,
    artist_message,
)
from .session import SERVER_STOPPING

# What the artist teaches, as the dialog offers it: (label, what is trained, tooltip). A style or a
# character needs the model's own weights to move (a LoRA); one small thing fits in an embedding.
SUBJECTS: dict[str, tuple[str, TrainingKind, str]] = {
    "style": ("Style", "lora", "How your pictures look: brushwork, palette, line. Trains a LoRA."),
    "character": ("Character", "lora", "A person or creature that should look the same in every picture. "
                                       "Trains a LoRA."),
    "concept": ("Small concept", "embedding", "One object or motif, learnt as a new word. Trains an "
                                              "embedding: small and quick, but it learns less."),
}
DEFAULT_SUBJECT = "style"
# The side of the square area pictures are shrunk to before they are sent, by the checkpoint's family
# (their native sizes, which the server trains at: docs/training.md, "Defaults").
FAMILY_SIDES = {"sd15": 512, "sdxl": 1024}
DEFAULT_SIDE = 512
SAMPLES = 4  # sample pictures a run shows, spread over its steps
MAX_LOSSES = 1000  # points kept for the loss curve
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9 _.-]+")

WAITING = "Waiting for the server…"
CANCELLED = "Training cancelled."
# The server goes on with a training whose client went away, and resumes one it stopped for a restart
# from its last checkpoint (docs/training.md): the new model is listed when done, but this run hears no more.
GOES_ON = "The server goes on with this training{when}; the new model appears in the LoRA menu when it is done."
STOPPED = "The server stopped. " + GOES_ON.format(when=" when it starts again")
LOST = "Lost the connection to the server. " + GOES_ON.format(when=" (after a restart, from its last checkpoint)")


class PictureSource(Protocol):
    """Where the dialog finds pictures in Krita (document.py's KritaWorkspace)."""

    def layer_pictures(self, side: int) -> list[Picture]:
        """The visible layers of the active document, each at most `side`² pixels."""

    def document_pictures(self, side: int) -> list[Picture]:
        """Each open document as it looks, at most `side`² pixels."""


@dataclass
class Picture:
    """One picture to train on: where it came from (shown in the dialog), its pixels (straight rgba8,
    already shrunk to the training area) and its caption ("" for the server's default)."""

    label: str
    image: Image
    caption: str = ""


def training_kind(subject: str) -> TrainingKind:
    return SUBJECTS[subject][1]


def training_side(model: ModelInfo | None) -> int:
    """The side of the area to shrink pictures to for a checkpoint: its recommended size, else its
    family's. The server fits the pictures to its own training size for the model."""
    if model is not None and model.defaults is not None and model.defaults.width and model.defaults.height:
        return math.isqrt(model.defaults.width * model.defaults.height)
    return FAMILY_SIDES.get(model.family if model is not None else "", DEFAULT_SIDE)


def fitted_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) shrunk, keeping the aspect, to at most side² pixels; never enlarged, never 0."""
    if width * height <= side * side:
        return width, height
    area, scale = side * side, side / math.sqrt(width * height)
    # A side rounded up to one pixel leaves the other less room.
    fitted_width = max(1, min(math.floor(width * scale), area // max(1, math.floor(height * scale))))
    return fitted_width, max(1, min(math.floor(height * scale), area // fitted_width))


def picture_files(names: Iterable[str]) -> list[str]:
    """The picture files among a folder's file names, in name order, at most as many as a run takes."""
    found = sorted((n for n in names if PurePath(n).suffix.lower() in PICTURE_SUFFIXES), key=str.lower)
    return found[:MAX_TRAINING_IMAGES]


def caption_file(picture: str) -> str:
    """The text file beside a picture that holds its caption, as kohya's and other trainers' folders
    keep them (`cat.png` -> `cat.txt`)."""
    return str(PurePath(picture).with_suffix(".txt"))


def model_name(name: str, trigger: str, taken: Iterable[str]) -> str:
    """The new model's name: what the artist typed, else the trigger; only characters a name may
    have, and numbered when another model has it already ("cat-2")."""
    base = _NOT_IN_NAME.sub("", name.strip() or trigger).strip().lstrip(".")[:TRAINED_NAME_LENGTH] or "trained"
    taken = {t.lower() for t in taken}
    candidate, number = base, 1
    while candidate.lower() in taken:
        number += 1
        suffix = f"-{number}"  # no space: an embedding is written in prompts by its name
        candidate = base[:TRAINED_NAME_LENGTH - len(suffix)] + suffix
    return candidate


@dataclass
class TrainingSettings:
    """What the Train dialog says besides the pictures."""

    model: str = ""
    subject: str = DEFAULT_SUBJECT
    trigger: str = ""
    name: str = ""  # "": the trigger
    steps: int | None = None  # None: the server's choice for the model and kind


def build_train(settings: TrainingSettings, pictures: Sequence[Picture], job_id: str,
                models: Sequence[ModelInfo], limits: Limits) -> Train:
    """The `train` request for `pictures` as `settings` say; UserError names what the artist must fix."""
    if not settings.model:
        raise UserError(NO_MODEL)
    if not pictures:
        raise UserError(NO_PICTURES)
    trigger = settings.trigger.strip()
    if not trigger:
        raise UserError(NO_TRIGGER)
    if any(c.isspace() for c in trigger) or len(trigger) > TRIGGER_LENGTH:
        raise UserError(TRIGGER_ONE_WORD)
    if len(pictures) > MAX_TRAINING_IMAGES:
        raise UserError(TOO_MANY_PICTURES, f"{len(pictures)} pictures, at most {MAX_TRAINING_IMAGES}")
    total = sum(p.image.width * p.image.height for p in pictures)
    if total > limits.max_pixels * 4:
        raise UserError(PICTURES_TOO_LARGE, f"{total} pixels, at most {limits.max_pixels * 4}")
    return Train(
        id=job_id, kind=training_kind(settings.subject), model=settings.model,
        name=model_name(settings.name, trigger, (m.name for m in models)), trigger=trigger,
        images=[TrainingImage(image=p.image, caption=p.caption.strip() or None) for p in pictures],
        steps=settings.steps, sample_every=max(1, settings.steps // SAMPLES) if settings.steps else None,
    )


@dataclass
class TrainingRun:
    """One training job as the dialog shows it. `state`: waiting (for a connection), queued, running,
    done, cancelled, failed, or detached: the server goes on with it, but this run hears no more of it
    (the connection was lost, or the server stopped and resumes it at its next start)."""

    request: Train
    state: str = "waiting"
    position: int = 0
    step: int = 0
    total: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss), oldest first
    sample: Image | None = None  # the newest sample picture with the trigger
    trained: str | None = None  # the new model's name, as `models` lists it, once done
    message: str = WAITING

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed", "detached")

    @property
    def kind_label(self) -> str:
        return "LoRA" if self.request.kind == "lora" else "embedding"

    def receive(self, message: Any) -> None:
        """A server message about this run."""
        if self.finished:
            return
        if isinstance(message, Queued):
            self.state, self.position = "queued", message.position
            self.message = "Queued: starts next." if message.position == 0 else \
                f"Queued: {message.position} job{'s' if message.position > 1 else ''} before it."
        elif isinstance(message, Progress):
            self.state, self.step, self.total = "running", message.step, message.total
            if message.loss is not None and math.isfinite(message.loss):
                self.losses = thinned(self.losses + [(message.step, message.loss)])
            self.sample = message.preview or self.sample
            loss = f" · loss {message.loss:.4f}" if message.loss is not None else ""
            self.message = f"Training: step {message.step} of {message.total}{loss}"
        elif isinstance(message, Result):
            self.state, self.trained = "done", message.name or self.request.name
            self.step = self.total = self.total or (self.request.steps or 0)
            if message.images:
                self.sample = message.images[0].image
            use = (f"pick it there and write “{self.request.trigger}” in the prompt" if self.request.kind == "lora"
                   else "pick it there to put it in the prompt")
            self.message = f"Done: the {self.kind_label} “{self.trained}” is in the LoRA menu; {use}."
        elif isinstance(message, Cancelled) and (message.reason or "").startswith(SERVER_STOPPING):
            self.state, self.message = "detached", STOPPED
        elif isinstance(message, Cancelled):
            # A cancelled training keeps what it learnt so far as the model's file; the reason says so.
            self.state = "cancelled"
            self.message = f"Training cancelled: {message.reason}." if message.reason else CANCELLED
        elif isinstance(message, Error):
            self.state, self.message = "failed", "Training failed: " + artist_message(message.code, message.message)

    def fail(self, code: str, detail: str | None = None, address: str | None = None) -> None:
        """No answer will come (the connection's `Failed`)."""
        if self.finished:
            return
        if code in (CONNECTION_LOST, SERVER_CHANGED):
            self.state, self.message = "detached", LOST
        else:
            self.state, self.message = "failed", "Training failed: " + artist_message(code, detail, address)


def thinned(points: list[tuple[int, float]], limit: int = MAX_LOSSES) -> list[tuple[int, float]]:
    """At most `limit` points: past it, each pair of neighbours becomes their mean, so a long run's
    curve keeps its shape in a fixed amount of memory."""
    if len(points) <= limit:
        return points
    pairs = [points[i:i + 2] for i in range(0, len(points), 2)]
    return [(pair[-1][0], sum(loss for _, loss in pair) / len(pair)) for pair in pairs]


def curve(points: Sequence[tuple[int, float]], width: float, height: float, total: int) -> list[tuple[float, float]]:
    """The loss curve in a `width` x `height` box (y down, as painters draw): steps from 0 to `total`
    across, the lowest loss seen at the bottom and the highest at the top."""
    if not points:
        return []
    last = max(total, points[-1][0], 1)
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    span = high - low
    return [(width * step / last, height / 2 if span == 0 else height * (high - loss) / span)
            for step, loss in points]
