"""The one user-facing error type.

Library code raises :class:`FourdError` with a single line that names the file, field or
option at fault and what was expected; the CLI prints it as ``error: <message>`` and exits
with code 2. Everything else escaping to the CLI is a bug and keeps its traceback.
"""


class FourdError(ValueError):
    """A problem with the user's input or environment, explained in one line.

    A ``ValueError``, so that code calling the library catches it as the bad value it reports.
    """

    def __init__(self, message: str):
        # Collapse to one line: a user-facing error never spans several lines.
        super().__init__(" ".join(str(message).split()))
