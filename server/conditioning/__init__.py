"""What steers a picture besides its start: prompts in the artists' syntaxes (prompts.py), their
text embeddings (encoder.py, conditioner.py) and regional prompts restricted to their masks
(regions.py)."""
