"""What the tests and the benchmarks share: tiny random-weight models (tiny_models.py), a real
server in this process (serving.py) or in its own (processes.py), a client whose every byte is
under control (raw_client.py), and Krita run headless on a scenario (krita.py)."""
