"""Use a tuned model: cited-concept evidence, an OpenAI-compatible HTTP server with batching, a web page.

``selfsynth chat`` and ``selfsynth serve`` are the commands; ``create_app`` builds the FastAPI
application around any backend with ``generate`` and ``chat`` (``selfsynth.models.vlm.VLM``).
Submodules import FastAPI lazily so the CLI stays quick to start.
"""
