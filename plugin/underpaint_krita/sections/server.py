"""The docker's first section: the server's address and token, Connect, the connection's state."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QHBoxLayout, QLabel, QLineEdit, QPushButton
from .base import Section


class ServerSection(Section):
    """The server's address and token, Connect, and whether the server answers."""

    def __init__(self, controller: Controller):
        super().__init__(controller)
        row = QHBoxLayout()
        self.url = QLineEdit(controller.connection.url)
        self.url.setToolTip("Address of the Underpaint server, e.g. ws://127.0.0.1:9860")
        self.connect_button = QPushButton("Connect")
        self.connect_button.clicked.connect(self._connect)
        self.token = QLineEdit(controller.connection.token or "")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("token")
        self.token.setToolTip("The server's access token; only servers on another computer need one")
        self.token.setMaximumWidth(90)
        self.token.returnPressed.connect(self._connect)
        self.url.returnPressed.connect(self._connect)
        row.addWidget(self.url, 1)
        row.addWidget(self.token)
        row.addWidget(self.connect_button)
        self.column.addLayout(row)
        self.status = QLabel("Connecting…")
        self.status.setWordWrap(True)
        self.column.addWidget(self.status)

    def refresh(self) -> None:
        server = self.controller.server
        self.status.setText(("● " if server.connected else "○ ") + server.message)

    def _connect(self) -> None:
        self.controller.set_server(self.url.text().strip(), self.token.text().strip() or None)
