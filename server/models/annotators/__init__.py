"""Models that make control images from pictures (annotators, the `preprocess` request): Depth Anything
for depth maps (depth.py); ViTPose for poses, on the people an RT-DETR detector finds (pose.py).

They are found in `annotators/` of each models folder (also under `models/`) as transformers folders —
config.json, model.safetensors and preprocessor_config.json — by their config's `model_type`
(folders.py), which the artist places there (docs/control.md). Only safetensors weights are loaded.
The one found first of each is loaded on first use and kept (kept.py).
"""
