"""Pixels: protocol payloads <-> pictures, sizes, inpaint mask math, latents <-> pictures,
progress previews and the results written to disk."""
