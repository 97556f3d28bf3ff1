"""The docker's regions: layers with their own prompt, added from the active layer."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QInputDialog
from .layers import LayerListSection


class RegionsSection(LayerListSection):
    """Layers with their own prompt: the list, Add layer (the active one), Remove."""

    def __init__(self, controller: Controller):
        super().__init__(controller, "regions", "Regions", "A layer's own prompt, where the layer is painted",
                         "Give the active layer or group a prompt; its painted pixels are the region",
                         "Forget the selected region's prompt (the layer stays)", self._add, controller.remove_region)

    def refresh(self) -> None:
        self.show_layers([(f"{layer_name}: {region.prompt}", region.layer_id)
                          for region, layer_name in self.controller.regions()])

    def _add(self) -> None:
        prompt, ok = QInputDialog.getText(self, "Region prompt", "What is painted in this layer's area:")
        if ok and prompt.strip():
            self.controller.add_region(prompt.strip())
