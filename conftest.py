"""Collection rules for the doctests of the package (``--doctest-modules`` over ``edgeser/``)."""

import importlib.util

# the pipecat integration imports pipecat at module level: without the extra there is nothing to test
collect_ignore = [] if importlib.util.find_spec("pipecat") else ["edgeser/integrations/pipecat.py"]
