"""The one exception type for bad input: its message names the problem and the fix."""


class UserError(ValueError):
    """Input cm3jax cannot accept. The command-line tool prints these without a traceback."""
