"""The error types whose message is shown to the user as one line, without a traceback."""


class UserError(Exception):
    """A problem the user can fix: bad flag, missing file, unusable data. The message says how."""


class Stopped(Exception):
    """Stopped by a signal (SIGTERM, SIGINT) after saving what resumes; exits with 128 + the signal's number."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number
