"""The one exception type for problems the user can cause (bad input, bad flags, missing files).

The CLI catches it once and prints its message as one line; any other exception is a bug.
"""


class GluondetError(Exception):
    """A problem with the user's input, stated so the user can fix it (name the file and the problem)."""
