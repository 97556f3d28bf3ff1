"""What `underpaint serve` prints: the server's own lines, and none of the libraries' notices a user
cannot act on (transformers' "requires torchvision", diffusers' "should be kept in float32" when the
VAE is upcast on purpose, loading progress bars)."""

from __future__ import annotations

import logging


def configure() -> None:
    """Call before diffusers is imported: transformers warns while diffusers imports it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
