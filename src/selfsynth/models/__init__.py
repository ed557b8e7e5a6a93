"""Models: the VLM backend, the text encoder, the expert concept sources and the tiny base VLM."""
