"""Training a LoRA or an embedding from the artist's pictures, as a job between painting jobs
(docs/training.md)."""
