"""Hand a run's training pairs, or a dataset's splits, to other tools in the layouts they read.

``pairs.load_pairs`` reads what a round's fine-tuning trained on, with each image's selected
concepts and scores; ``formats.export_pairs`` writes them for LLaVA, LLaMA-Factory, ms-swift,
TRL (``formats.FORMATS``) or Hugging Face ``datasets`` (``hf``); ``reference`` writes any
dataset as the reference scripts' ``{name}-{split}.json`` lists. Nothing is imported here, so
the CLI can name the formats without loading the data loaders.
"""
