"""The demo model: a toy text-to-image model trained on generated pictures of flat shapes.

It ships inside the repository so a fresh, offline install can generate pictures that follow the
prompt's colours ("a large red circle on the left, blue background"); docs/demo-model.md says how
well. It knows nothing beyond such shapes. It is made by tools/demo_model/, which the server
never imports.
"""

from pathlib import Path

NAME = "underpaint-demo"
MODEL_DIR: Path = Path(__file__).resolve().parent / "model"
# Its tiny autoencoder (what TAESD is to SD1.5), for live frames: tools/demo_model/tiny_autoencoder.py.
TINY_AUTOENCODER_DIR: Path = Path(__file__).resolve().parent / "tiny_autoencoder"
# Its ControlNets, one diffusers folder each (a scribble one: tools/demo_model/controlnet.py), listed
# only while the demo model is.
CONTROLNET_DIR: Path = Path(__file__).resolve().parent / "controlnet"
# Its reference adapter and the image encoder it reads pictures with (tools/demo_model/reference.py), single
# files, listed only while the demo model is.
IPADAPTER_DIR: Path = Path(__file__).resolve().parent / "ipadapter"
CLIP_VISION_DIR: Path = Path(__file__).resolve().parent / "clip_vision"
