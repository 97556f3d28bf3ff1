"""Styles, as artists know them from Krita AI Diffusion and InvokeAI: a named bundle of a model, a
prompt template (`{prompt}, oil painting`), a negative prompt, a sampler, steps, CFG scale and LoRAs.

Krita-free. Each style is a JSON file in a folder the Krita glue names (`underpaint/styles/` in
Krita's resource folder); tests use a temporary one. The styles in SHIPPED are written there when
the folder is made, so the artist edits and deletes them like their own.

A style's file is the artist's and may hold anything: it is read only when it is a regular file of
at most FILE_BYTES, each value is checked against its bounds (declared beside the field, as in the
protocol) and a bad one is dropped with a log line; a file without a usable name is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from shared.errors import ProtocolError
from shared.files import Unreadable, read_small_file
from shared.messages import NAME_LENGTH
from shared.schema import from_wire_lenient, spec, to_wire

from .errors import NO_STYLE_FOLDER, UserError
from .requests import Settings

log = logging.getLogger(__name__)

PLACEHOLDER = "{prompt}"
SUFFIX = ".json"
FILE_BYTES = 64 * 1024
MAX_STYLES = 500  # files read from the folder, at most
PROMPT_LENGTH = 4000
FILE_NAME_LENGTH = 48
LORA_STRENGTH = 0.8  # what a LoRA added without a strength gets, as in A1111
STRENGTH_LIMIT = 5.0
MAX_LORAS = 16


@dataclass(frozen=True)
class StyleLora:
    name: str = spec(max_len=NAME_LENGTH)
    strength: float = spec(LORA_STRENGTH, min=-STRENGTH_LIMIT, max=STRENGTH_LIMIT)


@dataclass(frozen=True)
class Style:
    """Empty or None fields leave the artist's choice (or the model's recommendation) alone."""

    name: str = spec(max_len=80)
    prompt: str = spec(PLACEHOLDER, max_len=PROMPT_LENGTH)  # the artist's prompt goes where {prompt} is
    negative_prompt: str = spec("", max_len=PROMPT_LENGTH)  # added to the artist's negative prompt
    model: str = spec("", max_len=NAME_LENGTH)
    sampler: str = spec("", max_len=64)
    steps: int | None = spec(None, min=1, max=150)
    cfg_scale: float | None = spec(None, min=0.0, max=30.0)
    loras: list[StyleLora] = spec(default_factory=list, max_len=MAX_LORAS)

    def apply(self, settings: Settings) -> Settings:
        """The settings a request is built from: the artist's prompt in the template, the negative
        prompts joined, the LoRAs as `<lora:name:strength>` tags."""
        tags = " ".join(f"<lora:{lora.name}:{lora.strength:g}>" for lora in self.loras if _tag_safe(lora.name))
        prompt = _join(fill_template(self.prompt, settings.prompt), tags, separator=" ")
        return replace(settings, prompt=prompt, negative_prompt=_join(settings.negative_prompt, self.negative_prompt))


SHIPPED = (
    Style("Oil painting", "{prompt}, oil painting, visible brush strokes, rich colours",
          "photo, 3d render, blurry"),
    Style("Watercolour", "{prompt}, watercolour painting, soft washes, paper texture", "photo, harsh outlines"),
    Style("Concept art", "{prompt}, concept art, digital painting, dramatic lighting, detailed",
          "blurry, low resolution, text, watermark"),
    Style("Ink drawing", "{prompt}, ink drawing, line art, cross-hatching, black and white", "colour, photo, blurry"),
)


def fill_template(template: str, prompt: str) -> str:
    """`template` with the artist's prompt in place of {prompt} (after it, without one), and no
    dangling commas where the prompt is empty."""
    if PLACEHOLDER not in template:
        return _join(prompt, template)
    filled = template.replace(PLACEHOLDER, prompt.strip())
    parts = [part.strip() for part in filled.split(",")]
    return ", ".join(part for part in parts if part)


def _join(*parts: str, separator: str = ", ") -> str:
    return separator.join(part.strip() for part in parts if part.strip())


def _tag_safe(name: str) -> bool:
    return bool(name) and not any(c in name for c in "<>:")


def to_json(style: Style) -> bytes:
    return json.dumps(to_wire(style), indent=1, ensure_ascii=False).encode("utf-8")


def from_json(raw: bytes, where: str) -> Style:
    """A style from a file's bytes; ValueError when it has no usable name or is no JSON object."""
    try:
        data = json.loads(raw.decode("utf-8"))
        style, problems = from_wire_lenient(Style, data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{where} is not JSON ({exc})") from None
    except ProtocolError as exc:
        raise ValueError(f"{where}: {exc.message}") from None
    for problem in problems:
        log.warning("style %s: ignored %s: %s", where, problem.field, problem.message)
    if not style.name.strip():
        raise ValueError(f"{where} has an empty name")
    return replace(style, name=style.name.strip())


class StyleLibrary:
    """The styles in `folder` by name. Without a folder (scripts, tests) it holds the shipped styles
    and cannot save."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self._files: dict[str, str] = {}  # style name -> its file's name in the folder
        self._styles: dict[str, Style] = {}
        self.reload()

    def reload(self) -> None:
        """Read the folder again (made, with the shipped styles, if it does not exist yet)."""
        if self.folder is None:
            self._styles = {style.name: style for style in SHIPPED}
            return
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            for style in SHIPPED:
                self.save(style)
        self._styles, self._files = {}, {}
        for path in sorted(self.folder.glob(f"*{SUFFIX}"))[:MAX_STYLES]:
            raw = _read(path)
            if raw is None:
                continue
            try:
                style = from_json(raw, path.name)
            except ValueError as exc:
                log.warning("skipped a style: %s", exc)
                continue
            if style.name in self._styles:
                log.warning("style %s is hidden by %s, which has the same name", path.name, self._files[style.name])
                continue
            self._styles[style.name], self._files[style.name] = style, path.name

    def names(self) -> list[str]:
        return sorted(self._styles, key=str.lower)

    def get(self, name: str) -> Style | None:
        return self._styles.get(name)

    def save(self, style: Style, replacing: str | None = None) -> None:
        """Write `style` (in place of the style named `replacing` when it is renamed)."""
        if self.folder is None:
            raise UserError(NO_STYLE_FOLDER)
        self.folder.mkdir(parents=True, exist_ok=True)
        old = replacing if replacing in self._files else style.name
        name = self._files.get(old) or self._free_file_name(style.name)
        temporary = self.folder / f".{name}.saving"
        temporary.write_bytes(to_json(style))
        os.replace(temporary, self.folder / name)
        if old != style.name and old in self._files:
            del self._styles[old], self._files[old]
        self._styles[style.name], self._files[style.name] = style, name

    def delete(self, name: str) -> None:
        if self.folder is None:
            raise UserError(NO_STYLE_FOLDER)
        file = self._files.pop(name, None)
        self._styles.pop(name, None)
        if file is not None:
            (self.folder / file).unlink(missing_ok=True)

    def _free_file_name(self, style_name: str) -> str:
        """A file name from the style's name (letters and digits only: a name is never a path)."""
        stem = re.sub(r"[^a-z0-9]+", "-", style_name.lower()).strip("-")[:FILE_NAME_LENGTH] or "style"
        taken = {p.name for p in self.folder.iterdir()} | set(self._files.values())
        candidates = (f"{stem}{SUFFIX}", *(f"{stem}-{n}{SUFFIX}" for n in range(2, MAX_STYLES + 2)))
        return next(c for c in candidates if c not in taken)


def _read(path: Path) -> bytes | None:
    """A style file's bytes: only a regular file, at most FILE_BYTES (a FIFO or a huge file named
    *.json must not hang or fill Krita)."""
    try:
        return read_small_file(path, FILE_BYTES)
    except Unreadable as exc:
        log.warning("skipped the style %s: %s", path.name, exc)
        return None


def style_from_settings(name: str, settings: Settings, base: Style | None) -> Style:
    """A new style named `name` holding the current model, sampler, steps and CFG scale, and the
    template, negative prompt and LoRAs of the style it is based on."""
    base = base or Style(name)
    return replace(base, name=name, model=settings.model, sampler=settings.scheduler, steps=settings.steps,
                   cfg_scale=settings.cfg_scale)


def describe(style: Style) -> str:
    """One tooltip for the style picker."""
    lines = [f"Prompt: {style.prompt}"]
    if style.negative_prompt:
        lines.append(f"Negative: {style.negative_prompt}")
    chosen = [f"{label} {value}" for label, value in (("model", style.model), ("sampler", style.sampler),
                                                      ("steps", style.steps), ("CFG", style.cfg_scale)) if value]
    if chosen:
        lines.append(", ".join(chosen))
    if style.loras:
        lines.append("LoRAs: " + ", ".join(f"{lora.name} {lora.strength:g}" for lora in style.loras))
    return "\n".join(lines)


def parse_loras(text: str) -> list[StyleLora]:
    """`name:0.8, other` as the style dialog takes them (a LoRA without a strength gets LORA_STRENGTH);
    a strength that is no number or out of bounds is left at that."""
    found = []
    for part in text.split(","):
        name, _, strength = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "")
        if not name.strip():
            continue
        try:
            value = float(strength) if strength.strip() else LORA_STRENGTH
        except ValueError:
            value = LORA_STRENGTH
        found.append(StyleLora(name.strip()[:NAME_LENGTH], max(-STRENGTH_LIMIT, min(STRENGTH_LIMIT, value))))
    return found[:MAX_LORAS]


def format_loras(loras: list[StyleLora]) -> str:
    return ", ".join(f"{lora.name}:{lora.strength:g}" for lora in loras)
