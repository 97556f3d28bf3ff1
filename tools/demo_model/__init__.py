"""Making the demo model that ships in server/models/demo/: the pictures and captions it learns
from, its tokenizer and components, training (`python -m tools.demo_model.train`) and the
measurement of what it draws (`python -m tools.demo_model.evaluate`), with the pixel detector that
the semantic tests use too. The server never imports this package."""
