"""Developer tools: scripts that make files the project ships (model configs, the demo model, locks)."""
