"""The layers an artist links to a document's jobs: region prompts, control layers and reference
pictures. Each list is stored in the document (.kra) whenever it changes, and loses the layers the
artist deleted when it is next read.

Krita-free: the document is reached through `LayerStore` (plugin/document.py wraps Krita's).
"""

from __future__ import annotations

import dataclasses
from pathlib import PurePath
from typing import Any, Protocol

from . import naming
from .controls import ControlLayer, Controls
from .errors import (
    BAD_CONTROL,
    BAD_REFERENCE,
    NO_CONTROL_LAYER,
    NO_LAYER,
    NO_REFERENCE_LAYER,
    UNREADABLE_PICTURE,
    UserError,
)
from .layer_list import LayerList, WeightedLayerList
from .references import DEFAULT_STRENGTH, ReferenceLayer, References
from .regions import RegionPrompt, Regions


class LayerStore(Protocol):
    """What of a document the linked layers need."""

    def load_list(self, key: str) -> bytes | None:
        """The stored list of linked layers under `key` ("regions", "controls", "references"); None when
        the document has none."""

    def save_list(self, key: str, blob: bytes) -> None: ...

    def add_picture_layer(self, path: str, name: str) -> str | None:
        """Import the picture file at `path` into a new hidden paint layer named `name` above the
        active layer; returns its uniqueId, None when the file is not a picture that can be read."""

    def active_layer_id(self) -> str | None:
        """The uniqueId of the layer or group the artist selected (never the preview layer)."""

    def layer_name(self, layer_id: str) -> str | None:
        """The name of a layer or group; None when it no longer exists."""


class LinkedLayers:
    """One document's region prompts, control layers and reference pictures."""

    def __init__(self, document: LayerStore, regions: Regions | None = None, controls: Controls | None = None,
                 references: References | None = None):
        self.document = document
        self.regions = regions if regions is not None else Regions()
        self.controls = controls if controls is not None else Controls()
        self.references = references if references is not None else References()

    @classmethod
    def stored(cls, document: LayerStore) -> LinkedLayers:
        """The lists stored in the document."""
        return cls(document, *(kind.stored(document.load_list(kind.KEY)) for kind in (Regions, Controls, References)))

    def named_regions(self) -> list[tuple[RegionPrompt, str]]:
        """The region prompts with their layers' names, dropping those whose layer was deleted."""
        return self._named(self.regions)

    def add_region(self, prompt: str, negative_prompt: str, limit: int) -> str:
        """Make the active layer or group a region with this prompt (or give it a new one); returns
        its layer id. `limit` is the server's number of regions."""
        layer_id = self._active_layer(NO_LAYER)
        self.regions.set(RegionPrompt(layer_id, prompt, negative_prompt), limit)
        self._save(self.regions)
        return layer_id

    def remove_region(self, layer_id: str) -> None:
        self.regions.remove(layer_id)
        self._save(self.regions)

    def named_controls(self) -> list[tuple[ControlLayer, str]]:
        """The control layers with their layers' names, dropping those whose layer was deleted."""
        return self._named(self.controls)

    def add_control(self, kind: str, limit: int | None = None) -> str:
        """Make the active layer a control of `kind` (a control already keeps its strength and range);
        returns its layer id."""
        return self._add_active(self.controls, NO_CONTROL_LAYER, kind, BAD_CONTROL, limit)

    def set_control(self, control: ControlLayer, limit: int | None = None) -> None:
        """Add a control layer or change one's kind, strength or range."""
        self._keep(self.controls, control, BAD_CONTROL, limit)

    def remove_control(self, layer_id: str) -> None:
        self.controls.remove(layer_id)
        self._save(self.controls)

    def named_references(self) -> list[tuple[ReferenceLayer, str]]:
        """The reference pictures with their layers' names, dropping those whose layer was deleted."""
        return self._named(self.references)

    def add_reference(self, mode: str, limit: int | None = None) -> str:
        """Make the active layer a reference picture in `mode` (a reference already keeps its strength
        and range); returns its layer id."""
        return self._add_active(self.references, NO_REFERENCE_LAYER, mode, BAD_REFERENCE, limit)

    def add_reference_picture(self, path: str, mode: str, limit: int | None = None) -> str:
        """Import a picture file as a new hidden layer above the active one, named after the file, and
        make it a reference picture in `mode`; returns its layer id. The artist's layers stay as they are."""
        self.references.check_room(limit)  # before a layer is added that could not be used
        reference = ReferenceLayer("", mode, DEFAULT_STRENGTH)
        self._check(self.references, reference, BAD_REFERENCE)
        layer_id = self.document.add_picture_layer(path, naming.reference_name(PurePath(path).name))
        if layer_id is None:
            raise UserError(UNREADABLE_PICTURE)
        self.set_reference(dataclasses.replace(reference, layer_id=layer_id), limit)
        return layer_id

    def set_reference(self, reference: ReferenceLayer, limit: int | None = None) -> None:
        """Add a reference picture or change one's mode, strength or range."""
        self._keep(self.references, reference, BAD_REFERENCE, limit)

    def remove_reference(self, layer_id: str) -> None:
        self.references.remove(layer_id)
        self._save(self.references)

    # --- helpers -----------------------------------------------------------------------------------

    def _active_layer(self, missing: str) -> str:
        """The active layer's id; UserError(`missing`) when none is selected."""
        layer_id = self.document.active_layer_id()
        if layer_id is None:
            raise UserError(missing)
        return layer_id

    def _add_active(self, items: WeightedLayerList, missing: str, choice: str, bad: str, limit: int | None) -> str:
        """Make the active layer an item of `items` whose CHOICE is `choice` (an item of that layer keeps its
        other settings); returns its layer id. UserError(`missing`) without an active layer, (`bad`) as `_keep`."""
        layer_id = self._active_layer(missing)
        item = items.get(layer_id) or items.ITEM(layer_id)
        self._keep(items, dataclasses.replace(item, **{items.CHOICE: choice}), bad, limit)
        return layer_id

    def _keep(self, items: LayerList, item: Any, bad: str, limit: int | None) -> None:
        """Add `item` to `items` or replace its layer's, and save them; UserError(`bad`) as `_check`, and
        the item is then not kept."""
        self._check(items, item, bad)
        items.set(item, limit)
        self._save(items)

    @staticmethod
    def _check(items: LayerList, item: Any, bad: str) -> None:
        """UserError(`bad`) naming what the server would refuse in `item`."""
        problem = items.problem(item)
        if problem is not None:
            raise UserError(bad, problem)

    def _named(self, items: LayerList) -> list[tuple[Any, str]]:
        """`items` with their layers' names; those whose layer was deleted are dropped and the rest saved."""
        named = [(item, self.document.layer_name(item.layer_id)) for item in items]
        if any(name is None for _, name in named):
            for item, name in named:
                if name is None:
                    items.remove(item.layer_id)
            self._save(items)
        return [(item, name) for item, name in named if name is not None]

    def _save(self, items: LayerList) -> None:
        self.document.save_list(items.KEY, items.to_json())
