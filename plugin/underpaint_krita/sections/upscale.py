"""The docker's Upscale: the canvas 2 or 4 times larger, by an upscaler model or Lanczos, refined with
the prompt or not; the result comes in as a new layer once Krita has scaled the canvas."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QComboBox, QFormLayout, QPushButton, QSpinBox
from .base import Choice, FoldingSection, fill_combo, narrow

LANCZOS = "Lanczos (no model)"


class UpscaleSection(FoldingSection):
    """Scale, upscaler, refine strength and the Upscale canvas button."""

    def __init__(self, controller: Controller):
        super().__init__(controller, "upscale", "Upscale", open_by_default=False)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.scale = narrow(QComboBox())
        for scale in (2, 4):
            self.scale.addItem(f"{scale}x", scale)
        self.scale.currentIndexChanged.connect(self._store)
        form.addRow("Scale", self.scale)
        self.upscaler = narrow(QComboBox())
        self.upscaler.setToolTip("Upscaler models are found in the models folder's upscale_models/ or ESRGAN/")
        self.upscaler.currentIndexChanged.connect(self._store)
        form.addRow("With", self.upscaler)
        self.refine = QSpinBox()
        self.refine.setRange(0, 100)
        self.refine.setSuffix("%")
        self.refine.setSpecialValueText("No refine")
        self.refine.setToolTip("Then refine the upscaled canvas with the prompt at this strength, tile by tile")
        self.refine.valueChanged.connect(self._store)
        form.addRow("Refine", self.refine)
        self.rows.addLayout(form)
        self.button = QPushButton("Upscale canvas")
        self.button.setToolTip("Scale the canvas as Image > Scale Image does and add the upscaled picture "
                               "as a new layer")
        self.button.clicked.connect(lambda: controller.upscale())
        self.rows.addWidget(self.button)

    def refresh(self) -> None:
        choices = [Choice(f"{name} ({scale}x)", name) for name, scale in self.controller.upscalers()]
        fill_combo(self.upscaler, [*choices, Choice(LANCZOS, "")], self.controller.upscaling.upscaler or "")
        self.button.setEnabled(self.controller.session() is not None)

    def _store(self, *_: object) -> None:
        upscaling = self.controller.upscaling
        upscaling.scale = self.scale.currentData() or 2
        upscaling.upscaler = self.upscaler.currentData() or None
        upscaling.refine = self.refine.value() / 100
