"""The error type whose message is shown to the user as one line, without a traceback."""


class UserError(Exception):
    """A problem the user can fix: bad flag, missing file, unusable data. The message says how."""
