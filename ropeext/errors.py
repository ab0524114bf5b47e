"""The one exception type the CLI turns into a clean message instead of a traceback."""


class RopeextError(Exception):
    """A problem with the user's input (file, key, value) that the user can fix.

    The message names what was wrong and what was expected. ``ropeext`` prints it as
    ``error: <message>`` and exits with status 2.
    """
