"""Models: found and identified in the users' folders (registry.py, identify.py), loaded onto the
device (loading.py), run per mode (pipelines.py), with LoRAs, embeddings, samplers and tiny
decoders; the demo model ships in demo/."""
