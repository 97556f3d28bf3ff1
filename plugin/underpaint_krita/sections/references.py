"""The docker's reference pictures: layers whose picture the result takes after (docs/reference.md),
each with its mode, strength and the part of the steps it acts in, shown with a thumbnail; a picture
file is added as a new hidden layer."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QFileDialog, QSize, QSizePolicy, QToolButton
from ..references import BOUNDS, DEFAULT_MODE, MODES, THUMBNAIL_SIDE, ReferenceLayer
from ..training import PICTURE_SUFFIXES
from .weighted import Weighted, WeightedLayerSection

PICTURE_FILTER = f"Pictures ({' '.join('*' + suffix for suffix in PICTURE_SUFFIXES)})"
ROWS_SHOWN = 2


class ReferencesSection(WeightedLayerSection):
    """The list with thumbnails, the selected reference's mode, strength and range, Add layer (the active
    one), Add image… (a file), Remove."""

    def __init__(self, controller: Controller):
        # "References": the header's arrow and "Reference pictures" in bold need more than the docker's
        # narrowest width with some fonts (seen: Qt's offscreen font, 1 px over).
        super().__init__(controller, "references", "References",
                         "Pictures the result takes after: all of it, its style, its composition or a face",
                         "Use the active layer's whole picture as a reference, in the mode chosen below",
                         "Stop using the selected layer as a reference (the layer stays)",
                         Weighted(ReferenceLayer, "mode", "Mode", MODES, DEFAULT_MODE, BOUNDS, (
                             "How strongly the result takes after the picture",
                             "The share of the steps done before the reference starts acting",
                             "The share of the steps after which the reference stops acting"),
                             controller.references, controller.add_reference, controller.set_reference,
                             controller.remove_reference))
        self.mode = self.choice
        self.add_image = QToolButton()
        self.add_image.setText("Add image…")
        self.add_image.setToolTip("Add a picture file as a reference: it comes in as a new hidden layer above the "
                                  "active one, kept in the document")
        self.add_image.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.add_image.clicked.connect(self._choose_file)
        self.rows.addWidget(self.add_image)  # a row of its own: three buttons do not fit the narrow docker
        self.layer_list.setIconSize(QSize(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self.layer_list.setMaximumHeight(ROWS_SHOWN * (THUMBNAIL_SIDE + 8))

    def refresh(self) -> None:
        entries = self.controller.references()
        self.show_layers(self._rows(), [self.controller.layer_thumbnail(reference.layer_id, THUMBNAIL_SIDE)
                                        for reference, _ in entries])
        self._show(self._entry())

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference picture", "", PICTURE_FILTER)
        if path:
            self.controller.add_reference_picture(path, self.choice.currentData())
