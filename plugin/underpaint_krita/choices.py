"""What the docker's controls say, and where each value comes from: the artist, the chosen style, or
the model's recommendation (`ModelInfo.defaults`).

Krita-free. The rule: a setting the artist has changed (or the chosen style sets) stays as it is;
every other one follows the model, and changes when the model does. Choosing a style starts afresh:
what it sets counts as chosen, the rest follows the model again.
"""

from __future__ import annotations

from dataclasses import fields, replace

from shared.messages import ModelDefaults, ModelInfo, Welcome

from .errors import NO_STYLE_NAME, UserError
from .preferences import DETAIL, FILL, STYLE, Preferences
from .recent_prompts import RecentPrompts
from .requests import Settings, detail, fill_mode
from .styles import Style, StyleLibrary

# The settings a model recommends that the docker has controls for (the canvas gives the size).
FOLLOWS_MODEL = ("steps", "cfg_scale", "scheduler")
BUILT_IN = Settings()  # what a model that recommends nothing (an older server's) gets


class Choices:
    def __init__(self, preferences: Preferences, library: StyleLibrary):
        self.preferences = preferences
        self.library = library
        self.settings = Settings(fill=fill_mode(preferences.read(FILL)), detail=detail(preferences.read(DETAIL)))
        self.touched: set[str] = set()  # what the artist or the style chose, of FOLLOWS_MODEL
        self.recent = RecentPrompts(preferences)
        self.style: Style | None = None
        stored = library.get(preferences.read(STYLE) or "")
        if stored is not None:
            self._take(stored, None)

    def edit(self, new: Settings, welcome: Welcome | None) -> None:
        """The artist changed controls: `new` is what they all say now. Changed settings count as
        chosen; a new model brings its recommendations for the others."""
        self.touched |= {name for name in FOLLOWS_MODEL if getattr(new, name) != getattr(self.settings, name)}
        model_changed = new.model != self.settings.model
        for f in fields(Settings):  # in place: the controller and the docker hold this object
            setattr(self.settings, f.name, getattr(new, f.name))
        if model_changed:
            self.follow_model(welcome)

    def follow_model(self, welcome: Welcome | None) -> None:
        """Every setting not chosen takes what the current model recommends (the built-in value
        where it has nothing to say)."""
        model = checkpoint(welcome, self.settings.model)
        recommended = model.defaults if model is not None and model.defaults is not None else ModelDefaults()
        for name in FOLLOWS_MODEL:
            if name not in self.touched:
                value = getattr(recommended, name)
                setattr(self.settings, name, getattr(BUILT_IN, name) if value is None else value)

    def forget_changes(self, welcome: Welcome | None) -> None:
        """Back to what the style sets and the model recommends."""
        self.touched = set(_set_by(self.style)) if self.style is not None else set()
        self.follow_model(welcome)

    def choose_style(self, name: str, welcome: Welcome | None) -> str:
        """Make the style named `name` the current one ("" for none); returns a note for the artist
        when part of it cannot be used on this server."""
        style = self.library.get(name) if name else None
        self.preferences.write(STYLE, style.name if style is not None else "")
        note = self._take(style, welcome)
        self.follow_model(welcome)
        return note

    def save_style(self, style: Style, replacing: str | None = None) -> None:
        """Save `style` (in place of the one named `replacing`, for an edit that renames it)."""
        if not style.name.strip():
            raise UserError(NO_STYLE_NAME)
        self.library.save(replace(style, name=style.name.strip()), replacing)

    def delete_style(self, name: str) -> None:
        self.library.delete(name)
        if self.style is not None and self.style.name == name:
            self.style = None
            self.preferences.write(STYLE, "")

    def for_request(self) -> Settings:
        """The settings a request is built from: with the style's prompt template, negative prompt
        and LoRAs."""
        return self.style.apply(self.settings) if self.style is not None else replace(self.settings)

    def _take(self, style: Style | None, welcome: Welcome | None) -> str:
        """Make `style` current and put what it sets into the settings (all of it while the
        server's models and samplers are not known)."""
        self.style, self.touched = style, set()
        if style is None:
            return ""
        missing = []
        if style.model and (welcome is None or checkpoint(welcome, style.model) is not None):
            self.settings.model = style.model
        elif style.model:
            missing.append(f"its model {style.model}")
        for name, value in _set_by(style).items():
            if name == "scheduler" and welcome is not None and value not in welcome.schedulers:
                missing.append(f"its sampler {value}")
                continue
            setattr(self.settings, name, value)
            self.touched.add(name)
        if not missing:
            return ""
        return f"The style “{style.name}” uses {' and '.join(missing)}, which this server does not have."


def _set_by(style: Style) -> dict[str, object]:
    """What of FOLLOWS_MODEL a style sets."""
    chosen = {"scheduler": style.sampler, "steps": style.steps, "cfg_scale": style.cfg_scale}
    return {name: value for name, value in chosen.items() if value not in (None, "")}


def checkpoint(welcome: Welcome | None, name: str) -> ModelInfo | None:
    """The usable checkpoint named `name` in `welcome`."""
    models = welcome.models if welcome is not None else []
    return next((m for m in models if m.usable_checkpoint and m.name == name), None)
