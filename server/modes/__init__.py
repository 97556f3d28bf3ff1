"""The modes a `generate` request names, one module each (base.py says what a mode object is)."""

from .base import Mode
from .img2img import Img2Img
from .inpaint import Inpaint
from .txt2img import Txt2Img
from .upscale import Upscale

MODES: dict[str, type[Mode]] = {mode.name: mode for mode in (Txt2Img, Img2Img, Inpaint, Upscale)}
