"""Krita glue: the Underpaint docker, a view of the controller's state and a remote for its actions.

No logic lives here: every button calls one controller action, and `refresh()` redraws from
the controller's state whenever the controller says something changed.
"""

from __future__ import annotations

from krita import DockWidget
from PyQt5.QtCore import QRegularExpression, QSize, Qt, QTimer
from PyQt5.QtGui import QIcon, QImage, QPixmap, QRegularExpressionValidator
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from shared.messages import MAX_SEED, Image

from .requests import FILL_MODES

DOCKER_ID = "underpaint_docker"
THUMBNAIL = 96
PREVIEW_SIDE = 192


def _qimage(image: Image) -> QImage:
    return QImage(image.data, image.width, image.height, image.width * 4, QImage.Format_RGBA8888).copy()


def _text_box(placeholder: str, lines: int) -> QPlainTextEdit:
    box = QPlainTextEdit()
    box.setPlaceholderText(placeholder)
    box.setTabChangesFocus(True)
    box.setFixedHeight(box.fontMetrics().lineSpacing() * lines + 12)
    return box


class UnderpaintDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("Underpaint")
        self.setObjectName(DOCKER_ID)
        self._icons: dict[str, QIcon] = {}
        self._build()
        from .extension import find_extension  # here, not at import: extension.py imports this module

        extension = find_extension()
        self.controller = extension.controller if extension is not None else None
        if self.controller is None:
            self.status.setText("Underpaint did not start; see Krita's log.")
            return
        self._extension = extension
        self.url.setText(self.controller.connection.url)
        self.token.setText(self.controller.connection.token or "")
        self._load_settings()
        self.controller.subscribe(self.refresh)
        self.destroyed.connect(lambda *_: self.controller.unsubscribe(self.refresh))
        # The selection changes without telling anyone; the button names what it will do.
        self._label_timer = QTimer(self)
        self._label_timer.timeout.connect(self._label_strength)
        self._label_timer.start(500)
        self.refresh()

    # --- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)

        server = QHBoxLayout()
        self.url = QLineEdit()
        self.url.setToolTip("Address of the Underpaint server, e.g. ws://127.0.0.1:9860")
        connect = QPushButton("Connect")
        connect.clicked.connect(self._connect)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("token")
        self.token.setToolTip("The server's access token; only servers on another computer need one")
        self.token.setMaximumWidth(90)
        self.token.returnPressed.connect(self._connect)
        self.url.returnPressed.connect(self._connect)
        server.addWidget(self.url, 1)
        server.addWidget(self.token)
        server.addWidget(connect)
        layout.addLayout(server)
        self.status = QLabel("Connecting…")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.model = QComboBox()
        self.model.setToolTip("The model that paints")
        self.model.currentTextChanged.connect(self._store_settings)
        layout.addWidget(self.model)

        self.prompt = _text_box("Prompt: what should appear", 3)
        self.negative = _text_box("Negative prompt: what to avoid", 2)
        for box in (self.prompt, self.negative):
            box.textChanged.connect(self._store_settings)
            layout.addWidget(box)

        form = QFormLayout()
        self.strength = QSlider(Qt.Horizontal)
        self.strength.setRange(1, 100)
        self.strength.setValue(100)
        self.strength.valueChanged.connect(self._store_settings)
        self.strength_label = QLabel()
        form.addRow(self.strength_label, self.strength)
        self.fill_mode = QComboBox()
        self.fill_mode.setToolTip("How a selection is inpainted; without a selection it is not used")
        for mode, (label, tooltip) in FILL_MODES.items():
            self.fill_mode.addItem(label, mode)
            self.fill_mode.setItemData(self.fill_mode.count() - 1, tooltip, Qt.ToolTipRole)
        self.fill_mode.currentIndexChanged.connect(self._choose_fill)
        form.addRow("Fill", self.fill_mode)
        self.batch = QSpinBox()
        self.batch.setRange(1, 8)
        self.batch.valueChanged.connect(self._store_settings)
        form.addRow("Images", self.batch)
        seed_row = QHBoxLayout()
        self.fixed_seed = QCheckBox("Fixed")
        self.fixed_seed.setToolTip("Off: a new random seed every time. On: repeat this seed.")
        self.seed = QLineEdit("0")
        self.seed.setValidator(QRegularExpressionValidator(QRegularExpression("[0-9]{1,19}")))
        self.seed.setToolTip("A result's seed is under its thumbnail")
        self.fixed_seed.toggled.connect(self._store_settings)
        self.seed.textChanged.connect(self._store_settings)
        seed_row.addWidget(self.fixed_seed)
        seed_row.addWidget(self.seed, 1)
        form.addRow("Seed", seed_row)
        layout.addLayout(form)

        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.RightArrow)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        layout.addWidget(self.advanced_toggle)
        self.advanced = QWidget()
        advanced = QFormLayout(self.advanced)
        advanced.setContentsMargins(0, 0, 0, 0)
        self.steps = QSpinBox()
        self.steps.setRange(1, 150)
        self.cfg = QDoubleSpinBox()
        self.cfg.setRange(0.0, 30.0)
        self.cfg.setSingleStep(0.5)
        self.scheduler = QComboBox()
        for widget in (self.steps, self.cfg):
            widget.valueChanged.connect(self._store_settings)
        self.scheduler.currentIndexChanged.connect(self._store_settings)
        advanced.addRow("Steps", self.steps)
        advanced.addRow("CFG scale", self.cfg)
        advanced.addRow("Sampler", self.scheduler)
        self.advanced.setVisible(False)
        layout.addWidget(self.advanced)

        layout.addWidget(QLabel("Regions: a layer's own prompt, where the layer is painted"))
        self.regions = QListWidget()
        self.regions.setMaximumHeight(80)
        layout.addWidget(self.regions)
        region_buttons = QHBoxLayout()
        add_region = QPushButton("Add active layer")
        add_region.setToolTip("Give the active layer or group a prompt; its painted pixels are the region")
        add_region.clicked.connect(self._add_region)
        remove_region = QPushButton("Remove")
        remove_region.clicked.connect(self._remove_region)
        region_buttons.addWidget(add_region)
        region_buttons.addWidget(remove_region)
        layout.addLayout(region_buttons)

        buttons = QHBoxLayout()
        self.generate = QPushButton("Generate")
        self.generate.setDefault(True)
        self.generate.clicked.connect(lambda: self.controller.generate())
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(lambda: self.controller.cancel())
        self.live = QPushButton("Live")
        self.live.setCheckable(True)
        self.live.setToolTip("Repaint the preview whenever the canvas changes (set the strength below 100%)")
        self.live.toggled.connect(lambda on: self.controller.set_live(on))
        buttons.addWidget(self.generate, 2)
        buttons.addWidget(self.cancel, 1)
        buttons.addWidget(self.live, 1)
        layout.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        layout.addWidget(self.progress)
        self.step_preview = QLabel()
        self.step_preview.setAlignment(Qt.AlignCenter)
        self.step_preview.setVisible(False)
        layout.addWidget(self.step_preview)
        self.message = QLabel()
        self.message.setWordWrap(True)
        layout.addWidget(self.message)

        self.results = QListWidget()
        self.results.setViewMode(QListView.IconMode)
        self.results.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.results.setResizeMode(QListView.Adjust)
        self.results.setMovement(QListView.Static)
        self.results.setMinimumHeight(THUMBNAIL + 24)
        self.results.itemClicked.connect(lambda item: self.controller.show(item.data(Qt.UserRole)))
        self.results.itemDoubleClicked.connect(lambda item: self.controller.apply(item.data(Qt.UserRole)))
        layout.addWidget(self.results, 1)
        results_buttons = QHBoxLayout()
        self.apply = QPushButton("Apply")
        self.apply.setToolTip("Copy the result shown into a new layer above the active layer")
        self.apply.clicked.connect(lambda: self.controller.apply())
        self.discard = QPushButton("Discard")
        self.discard.setToolTip("Remove the selected result from the history")
        self.discard.clicked.connect(self._discard)
        results_buttons.addWidget(self.apply)
        results_buttons.addWidget(self.discard)
        layout.addLayout(results_buttons)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.setWidget(scroll)

    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        self.advanced_toggle.setArrowType(Qt.DownArrow if shown else Qt.RightArrow)

    # --- docker -> controller ------------------------------------------------------------------

    def _load_settings(self) -> None:
        settings = self.controller.settings
        self._loading = True
        self.prompt.setPlainText(settings.prompt)
        self.negative.setPlainText(settings.negative_prompt)
        self.strength.setValue(round(settings.strength * 100))
        self.batch.setValue(settings.batch_size)
        self.fixed_seed.setChecked(settings.seed is not None)
        self.seed.setText(str(settings.seed or 0))
        self.steps.setValue(settings.steps)
        self.cfg.setValue(settings.cfg_scale)
        self.fill_mode.setCurrentIndex(self.fill_mode.findData(settings.fill))
        self._loading = False
        self._store_settings()

    def _store_settings(self, *_: object) -> None:
        if getattr(self, "_loading", True):
            return
        settings = self.controller.settings
        settings.prompt = self.prompt.toPlainText()
        settings.negative_prompt = self.negative.toPlainText()
        settings.strength = self.strength.value() / 100
        settings.batch_size = self.batch.value()
        settings.seed = min(int(self.seed.text() or 0), MAX_SEED) if self.fixed_seed.isChecked() else None
        settings.steps = self.steps.value()
        settings.cfg_scale = self.cfg.value()
        if self.model.currentText():
            settings.model = self.model.currentText()
        if self.scheduler.currentData():
            settings.scheduler = self.scheduler.currentData()
        self.seed.setEnabled(self.fixed_seed.isChecked())
        self._label_strength()

    def _choose_fill(self, *_: object) -> None:
        if not getattr(self, "_loading", True):
            self.controller.set_fill(self.fill_mode.currentData())

    def _label_strength(self) -> None:
        percent = self.strength.value()
        session = self.controller.session()
        selection = session is not None and session.document.selection_bounds() is not None
        if percent >= 100:
            action = "Inpaint selection" if selection else "Generate"
        else:
            action = "Refine selection" if selection else "Refine"
        self.strength_label.setText(f"Strength {percent}%")
        self.generate.setText(action)

    def _connect(self) -> None:
        self._extension.set_server(self.url.text().strip(), self.token.text().strip() or None)

    def _add_region(self) -> None:
        prompt, ok = QInputDialog.getText(self, "Region prompt", "What is painted in this layer's area:")
        if ok and prompt.strip():
            self.controller.add_region(prompt.strip())

    def _remove_region(self) -> None:
        item = self.regions.currentItem()
        if item is not None:
            self.controller.remove_region(item.data(Qt.UserRole))

    def _show_regions(self) -> None:
        self.regions.clear()
        for region, layer_name in self.controller.regions():
            item = QListWidgetItem(f"{layer_name}: {region.prompt}")
            item.setData(Qt.UserRole, region.layer_id)
            self.regions.addItem(item)

    def _discard(self) -> None:
        item = self.results.currentItem()
        if item is not None:
            self.controller.discard(item.data(Qt.UserRole))

    # --- controller -> docker ------------------------------------------------------------------

    def canvasChanged(self, canvas) -> None:  # Krita calls this when the active document changes
        if self.controller is not None:
            self.refresh()

    def refresh(self) -> None:
        controller = self.controller
        server = controller.server
        self.status.setText(("● " if server.connected else "○ ") + server.message)
        self._loading = True
        self._fill_combo(self.model, [(name, name) for name in server.models], controller.settings.model)
        if server.welcome is not None:
            labels = server.welcome.scheduler_labels
            choices = [(labels.get(name, name), name) for name in server.welcome.schedulers]
            self._fill_combo(self.scheduler, choices, controller.settings.scheduler)
            self.batch.setMaximum(server.welcome.limits.max_batch)
        self._loading = False
        self._store_settings()

        session = controller.session()
        self.message.setText(controller.message)
        self.generate.setEnabled(session is not None)
        jobs = session.jobs if session is not None else []
        self.cancel.setEnabled(bool(jobs))
        self.live.setEnabled(session is not None)
        self.live.blockSignals(True)
        self.live.setChecked(session is not None and session.live is not None)
        self.live.blockSignals(False)
        self._show_progress(jobs)
        self._show_results(session)
        self._show_regions()

    @staticmethod
    def _fill_combo(combo: QComboBox, choices: list[tuple[str, str]], current: str) -> None:
        if [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())] != choices:
            combo.clear()
            for text, data in choices:
                combo.addItem(text, data)
        index = combo.findData(current)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _show_progress(self, jobs: list) -> None:
        self.progress.setVisible(bool(jobs))
        if not jobs:
            self.step_preview.setVisible(False)
            return
        job = jobs[0]
        waiting = f" (+{len(jobs) - 1} waiting)" if len(jobs) > 1 else ""
        if job.state == "running" and job.total:
            self.progress.setRange(0, job.total)
            self.progress.setValue(job.step)
            self.progress.setFormat(f"Step {job.step} of {job.total}{waiting}")
        else:
            self.progress.setRange(0, 0)  # busy indicator
            where = f", {job.position} ahead" if job.state == "queued" and job.position else ""
            self.progress.setFormat(f"{'Queued' if job.state == 'queued' else 'Waiting'}{where}{waiting}")
        if job.preview is not None:
            pixmap = QPixmap.fromImage(_qimage(job.preview))
            self.step_preview.setPixmap(pixmap.scaled(PREVIEW_SIDE, PREVIEW_SIDE, Qt.KeepAspectRatio,
                                                      Qt.SmoothTransformation))
            self.step_preview.setVisible(True)

    def _show_results(self, session) -> None:
        entries = session.history.newest_first() if session is not None else []
        ids = [entry.id for entry in entries]
        shown = [self.results.item(i).data(Qt.UserRole) for i in range(self.results.count())]
        if ids != shown:
            self.results.clear()
            for entry in entries:
                item = QListWidgetItem(self._icon(entry), str(entry.seed))
                item.setData(Qt.UserRole, entry.id)
                item.setToolTip(f"{entry.prompt or '(no prompt)'}\nseed {entry.seed} · {entry.model} · {entry.mode}")
                self.results.addItem(item)
            self._icons = {k: v for k, v in self._icons.items() if k in ids}
        current = session.shown if session is not None else None
        for i in range(self.results.count()):
            item = self.results.item(i)
            if item.data(Qt.UserRole) == current:
                self.results.setCurrentItem(item)
            item.setSelected(item.data(Qt.UserRole) == current)
        self.apply.setEnabled(current is not None)
        self.discard.setEnabled(bool(entries))

    def _icon(self, entry) -> QIcon:
        if entry.id not in self._icons:
            image = _qimage(entry.image()).scaled(THUMBNAIL, THUMBNAIL, Qt.KeepAspectRatio, Qt.SmoothTransformation)
            self._icons[entry.id] = QIcon(QPixmap.fromImage(image))
        return self._icons[entry.id]
