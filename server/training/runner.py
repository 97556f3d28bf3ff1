"""The training job handler: checks a `train` request before it is queued, runs it on the worker
between painting jobs, and resumes the trainings a previous server left unfinished.

A run goes step by step: before each optimizer step it stops if cancelled (saving what it has learnt
as the model's file) or steps aside if another job waits (`Paused`; the queue runs it again later,
its state kept in `job.state`). Progress with the loss goes out a few times a second, a sample
picture every `sample_every` steps, a checkpoint every `checkpoint_every`.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from transformers import CLIPTokenizer

from shared.messages import Cancelled, Progress, Result, ResultImage
from shared.training import Train

from ..errors import OutOfMemory, RequestError, Unsupported
from ..imaging import payloads
from ..imaging.outputs import OutputWriter
from ..jobs.job import STOPPING, Job, Paused, Reply
from ..models.entry import ModelEntry
from ..models.loading import config_dir
from ..models.memory import is_out_of_memory
from ..models.registry import Registry
from . import checkpoints, files
from .dataset import caption, decode
from .defaults import Settings, settings_for
from .embedding import check_trigger
from .loop import Training

log = logging.getLogger("underpaint.training")

PROGRESS_INTERVAL = 0.25  # seconds between two progress messages


@dataclass
class Run:
    """What a training job keeps in memory between its runs."""

    training: Training
    settings: Settings
    resumed_from: int
    started: float = field(default_factory=time.monotonic)  # pauses included, unlike the job's started_at
    sample: PIL.Image.Image | None = None
    sent_at: float = 0.0


class Trainer:
    def __init__(self, registry: Registry, device: torch.device, dtype: torch.dtype, outputs: Path,
                 writer: OutputWriter | None):
        if not registry.folders:
            raise ValueError("training needs a models folder to write into")
        self.registry = registry
        self.device = device
        self.dtype = dtype
        self.outputs = outputs
        self.writer = writer

    @property
    def models(self) -> Path:
        return self.registry.folders[0]

    # --- before queueing (a reading thread) --------------------------------------------------------

    def check(self, request: Train) -> None:
        """Everything a request can be refused for, then its state folder written (so a restart resumes
        it). Raises UnknownModel / ModelBroken (field model), Unsupported, BadInput naming the field."""
        entry = self.registry.get(request.model)
        if entry.family not in ("sd15", "sdxl") or entry.variant != "regular":
            raise Unsupported(f"{request.model} cannot be trained: training needs a regular SD1.5 or SDXL "
                              "checkpoint (not an inpaint model)", "model")
        files.check_free(self.registry, self.models, request)
        pictures = decode(request)
        if request.kind == "embedding":
            check_trigger(tokenizers(entry), request.trigger)
        if request.seed is None:
            request.seed = secrets.randbelow(2**32)
        checkpoints.create(self.outputs, request, pictures)

    def forget(self, request: Train) -> None:
        """The state folder of a request that was checked but not queued."""
        checkpoints.remove(checkpoints.folder_for(self.outputs, request))

    def unfinished(self, reply: Reply) -> list[Job]:
        """Jobs for the trainings a previous server left unfinished, to queue at start (no client)."""
        jobs = []
        for folder in checkpoints.unfinished(self.outputs):
            try:
                request = checkpoints.load_request(folder)
            except Exception:
                log.exception("the training in %s cannot be resumed; left as it is", folder)
                continue
            try:
                self.registry.get(request.model)
            except RequestError as exc:  # its model's drive not mounted, say: kept for a later start
                log.warning("training %s waits for its model: %s", request.name, exc)
                continue
            log.info("resuming training %s (%s)", request.name, request.kind)
            jobs.append(Job(request=request, owner=0, reply=reply, background=True,
                            size=sum(len(item.image.data) for item in request.images)))
        return jobs

    # --- on the worker ----------------------------------------------------------------------------

    def __call__(self, job: Job) -> Any:
        folder = checkpoints.folder_for(self.outputs, job.request)
        try:
            return self._run(job, folder)
        except Exception as exc:
            # A training that failed is not resumed at the next start, to fail again.
            job.state = None
            checkpoints.remove(folder)
            if is_out_of_memory(exc):
                raise OutOfMemory(f"not enough memory to train on {self.device}: lower resolution or batch_size",
                                  "resolution") from exc
            raise

    def _run(self, job: Job, folder: Path) -> Any:
        request = job.request
        assert isinstance(request, Train)
        if job.cancelled and job.state is None:
            saved = checkpoints.load(folder)
            return self._cancelled(job, folder, saved.adapter if saved else None, saved.step if saved else 0)
        run = job.state if job.state is not None else self._start(job, folder)
        job.state = run
        training, settings = run.training, run.settings
        job.total = settings.steps
        while training.step < settings.steps:
            if job.cancelled:
                return self._cancelled(job, folder, training.state(), training.step)
            if job.pause.is_set():
                return Paused()
            loss = training.train_step()
            job.step = training.step
            preview = None
            if settings.sample_every and training.step % settings.sample_every == 0:
                sample = training.sample(lambda: job.pause.is_set() or job.cancelled)
                if sample is not None:
                    run.sample = sample
                    self._save_sample(run, request)
                    preview = payloads.from_pil(sample, "png")
            if training.step % settings.checkpoint_every == 0 and training.step < settings.steps:
                checkpoints.save(folder, training.checkpoint())
            now = time.monotonic()
            if preview is not None or training.step == settings.steps or now - run.sent_at >= PROGRESS_INTERVAL:
                run.sent_at = now
                job.reply(Progress(id=job.id, step=training.step, total=settings.steps, loss=loss, preview=preview))
        return self._finish(job, folder, run)

    def _start(self, job: Job, folder: Path) -> Run:
        request = job.request
        entry = self.registry.get(request.model)
        settings = settings_for(request, entry.family or "", entry.embedded)
        training = Training(request, entry, settings, decode(request), self.device, self.dtype, request.seed or 0)
        saved = checkpoints.load(folder)
        if saved is not None:
            training.restore(saved)
            log.info("training %s resumes at step %d", request.name, saved.step)
        return Run(training, settings, resumed_from=saved.step if saved else 0)

    def _finish(self, job: Job, folder: Path, run: Run) -> Result:
        request = job.request
        path = self._write(request, run.training.entry, run.settings, run.training.state(), run.training.step)
        info = {**self._describe(request, run.training.entry, run.settings, run.training.step),
                "resumed_from": run.resumed_from}
        checkpoints.remove(folder)
        job.state = None
        images = []
        if run.sample is not None:
            images.append(ResultImage(image=payloads.from_pil(run.sample, "png"), seed=request.seed or 0))
        return Result(id=job.id, images=images, info=info, elapsed=time.monotonic() - run.started,
                      name=path.stem, file=path.name)

    def _cancelled(self, job: Job, folder: Path, state: dict[str, torch.Tensor] | None, step: int) -> Cancelled:
        request = job.request
        job.state = None
        if job.cancel_reason == STOPPING:
            return Cancelled(id=job.id, reason=f"{STOPPING}: training {request.name} resumes from its last "
                                               "checkpoint when the server starts again")
        if state is None or step == 0:
            checkpoints.remove(folder)
            return Cancelled(id=job.id, reason=f"cancelled before the first step; nothing saved as {request.name}")
        entry = self.registry.get(request.model)
        settings = settings_for(request, entry.family or "", entry.embedded)
        path = self._write(request, entry, settings, state, step)
        checkpoints.remove(folder)
        return Cancelled(id=job.id, reason=f"cancelled at step {step} of {settings.steps}; saved as {path.stem}")

    def _write(self, request: Train, entry: ModelEntry, settings: Settings, state: dict[str, torch.Tensor],
               step: int) -> Path:
        """The model's file, on disk and in the registry before anything is sent."""
        path = files.target(self.models, request)
        captions = [caption(item, request.kind, request.trigger) for item in request.images]
        meta = files.metadata(request, entry, settings, step, len(request.images), captions, {})
        files.write(path, files.tensors(request.kind, state, entry.family or "sd15"), meta)
        self.registry.scan()
        log.info("training %s: %s written after %d steps", request.name, path.name, step)
        return path

    def _describe(self, request: Train, entry: ModelEntry, settings: Settings, step: int) -> dict[str, Any]:
        return {"kind": request.kind, "model": entry.name, "name": request.name, "trigger": request.trigger,
                "steps": step, "learning_rate": settings.learning_rate,
                "rank": settings.rank if request.kind == "lora" else None, "resolution": settings.resolution,
                "batch_size": settings.batch_size, "images": len(request.images), "seed": request.seed,
                "train_text_encoder": settings.train_text_encoder, "flip": request.flip}

    def _save_sample(self, run: Run, request: Train) -> None:
        if self.writer is not None and run.sample is not None:
            self.writer.save(run.sample, {"prompt": request.trigger, "model": request.model,
                                          "steps": run.training.step, "mode": "train"}, request.seed or 0)


def tokenizers(entry: ModelEntry) -> list[CLIPTokenizer]:
    """A model's tokenizers alone (what the trigger check needs), read from its configs."""
    base = entry.path if entry.format == "diffusers" else config_dir(entry)
    folders = [base / "tokenizer"] + ([base / "tokenizer_2"] if entry.family == "sdxl" else [])
    return [_tokenizer(folder) for folder in folders if folder.is_dir()]


@cache
def _tokenizer(folder: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
