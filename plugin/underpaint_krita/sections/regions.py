"""The docker's regions: layers with their own prompt, added from the active layer."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QHBoxLayout, QInputDialog, QListWidget, QListWidgetItem, QSizePolicy, QToolButton
from .base import USER_ROLE, FoldingSection, wrapping_label


class RegionsSection(FoldingSection):
    """Layers with their own prompt: the list, Add layer (the active one), Remove."""

    def __init__(self, controller: Controller):
        super().__init__(controller, "regions", "Regions", open_by_default=False)
        self.rows.addWidget(wrapping_label("A layer's own prompt, where the layer is painted"))
        self.region_list = QListWidget()
        self.region_list.setMaximumHeight(80)
        self.rows.addWidget(self.region_list)
        buttons = QHBoxLayout()
        # Tool buttons: they need less room around their text than push buttons in the narrow column.
        self.add = QToolButton()
        self.add.setText("Add layer")
        self.add.setToolTip("Give the active layer or group a prompt; its painted pixels are the region")
        self.add.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.add.clicked.connect(self._add)
        self.remove = QToolButton()
        self.remove.setText("Remove")
        self.remove.setToolTip("Forget the selected region's prompt (the layer stays)")
        self.remove.clicked.connect(self._remove)
        buttons.addWidget(self.add, 1)
        buttons.addWidget(self.remove)
        self.rows.addLayout(buttons)

    def refresh(self) -> None:
        self.region_list.clear()
        for region, layer_name in self.controller.regions():
            item = QListWidgetItem(f"{layer_name}: {region.prompt}")
            item.setData(USER_ROLE, region.layer_id)
            self.region_list.addItem(item)

    def _add(self) -> None:
        prompt, ok = QInputDialog.getText(self, "Region prompt", "What is painted in this layer's area:")
        if ok and prompt.strip():
            self.controller.add_region(prompt.strip())

    def _remove(self) -> None:
        item = self.region_list.currentItem()
        if item is not None:
            self.controller.remove_region(item.data(USER_ROLE))
