"""The demo model: a toy text-to-image model trained on generated pictures of flat shapes.

It ships inside the repository so a fresh, offline install can generate prompt-following pictures
("a large red circle on the left, blue background"). It knows nothing beyond such shapes.
"""

from pathlib import Path

NAME = "underpaint-demo"
MODEL_DIR: Path = Path(__file__).resolve().parent / "model"
