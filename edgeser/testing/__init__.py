"""Test helpers for users of edgeser and for its own tests (public, but not product code).

* :mod:`edgeser.testing.openai_server`: a loopback OpenAI-compatible chat-completions server around any
  Python callable, to try the LALM teacher (or your own client code) without a real audio LLM;
* :mod:`edgeser.testing.models`: tiny models that train in seconds on the bundled demo clips
  (needs the ``[adapt]`` extra).

Nothing here is imported by ``edgeser.runtime``; import the submodules you need.
"""
