"""The embedded base VLM: a LLaVA checkpoint with a frozen EfficientNet-Lite0 tower, built offline on the bird world.

`build.ensure_base_model` builds or loads it; the package import stays cheap because every command pays for it.
"""
