"""The one exception type that reaches the user as a message, not a traceback."""


class UserError(Exception):
    """Bad input or environment, explained: the CLI prints the message and exits with code 2."""
