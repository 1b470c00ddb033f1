"""User-facing errors: each one's message is a single line that the CLI prints without a traceback."""

from __future__ import annotations


class EdgeserError(Exception):
    """A problem the user can fix (bad input, missing file, missing device). ``str()`` is one line."""

    def __str__(self) -> str:  # keep the CLI's promise of one line
        return " ".join(super().__str__().split())


class AudioError(EdgeserError):
    """Audio that cannot be read or used (corrupt, empty, non-finite, unsupported)."""


class ManifestError(EdgeserError):
    """A manifest that cannot be read or does not fit the model."""


class ModelError(EdgeserError):
    """A model file that cannot be loaded or is not an edgeser model."""


class DeviceError(EdgeserError):
    """Audio device problems: PortAudio missing, no such device, stream failures."""


class LALMError(EdgeserError):
    """An LALM endpoint that cannot be used (bad URL, auth, repeated failures)."""


class CallBudgetSpent(LALMError):
    """A run stopped cleanly at its ``--max-calls`` limit: every answer so far is cached; the CLI exits 3."""

    exit_code = 3
