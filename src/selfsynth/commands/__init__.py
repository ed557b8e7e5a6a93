"""Subcommands of the ``selfsynth`` CLI, one module each (see ``selfsynth.cli``)."""
