"""What an install put where and what it was asked for (`install.json` in the install folder): a
plain re-run repairs that same install (options given again replace the remembered ones, models
folders add up), notices a change of PyTorch build, and `--uninstall` knows what to remove."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

STATE_NAME = "install.json"


@dataclass
class InstallState:
    torch_request: str = "auto"  # --torch as last given
    torch: str | None = None  # the PyTorch build's tag (cpu, cu128, …)
    model_sets: list[str] = field(default_factory=lambda: ["minimal"])
    models_dir: str | None = None  # where the installer puts model files
    registered_models: list[str] = field(default_factory=list)  # the user's own folders
    launcher: str | None = None
    krita_dir: str | None = None  # None: Krita's default folder

    @classmethod
    def load(cls, install_dir: Path) -> InstallState:
        try:
            data = json.loads((install_dir / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def save(self, install_dir: Path) -> None:
        install_dir.mkdir(parents=True, exist_ok=True)
        temporary = install_dir / f"{STATE_NAME}.tmp"
        temporary.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(temporary, install_dir / STATE_NAME)
