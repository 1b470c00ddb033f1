"""Integrations with voice-app frameworks. Each submodule imports its framework itself (an optional
extra, e.g. ``pip install 'edgeser[pipecat]'``); importing this package imports none of them."""
