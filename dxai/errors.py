"""The one error type dxai raises for bad input: its message names the culprit and the fix.

Command lines print such errors as one sentence instead of a traceback.
"""


class DXAIError(ValueError):
    """Input (data, configuration, weights, checkpoint, bundle) that dxai cannot use."""
