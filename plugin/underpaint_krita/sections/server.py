"""The docker's server section: whether the server answers, always in sight under the header; the
address, the token and Connect folded under that."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QHBoxLayout, QLineEdit, QPushButton
from .base import FoldingSection, wrapping_label


class ServerSection(FoldingSection):
    """Whether the server answers; the server's address and token, Connect."""

    def __init__(self, controller: Controller):
        super().__init__(controller, "server", "Server", open_by_default=False)
        self.status = wrapping_label("Connecting…")
        self.column.insertWidget(1, self.status)  # between the header and the folding body
        self.url = QLineEdit(controller.connection.url)
        self.url.setToolTip("Address of the Underpaint server, e.g. ws://127.0.0.1:9860")
        self.url.returnPressed.connect(self._connect)
        self.rows.addWidget(self.url)
        row = QHBoxLayout()
        self.token = QLineEdit(controller.connection.token or "")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("token")
        self.token.setToolTip("The server's access token; only servers on another computer need one")
        self.token.returnPressed.connect(self._connect)
        self.connect_button = QPushButton("Connect")
        self.connect_button.clicked.connect(self._connect)
        row.addWidget(self.token, 1)
        row.addWidget(self.connect_button)
        self.rows.addLayout(row)

    def refresh(self) -> None:
        server = self.controller.server
        self.status.setText(("● " if server.connected else "○ ") + server.message)

    def _connect(self) -> None:
        self.controller.set_server(self.url.text().strip(), self.token.text().strip() or None)
