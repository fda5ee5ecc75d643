"""The exception types for errors a user can cause and can fix.

Every one of them is an :class:`AlikedError`, so a tool or the node catches one type; the subclasses are also the
built-in exception a Python caller would expect (``except ValueError`` works for a bad value), and
:class:`MissingPackageError` says which package to install.
"""


class AlikedError(Exception):
    """A problem with the user's input or setup, with a sentence that says what to do.

    Command-line tools print the message and exit non-zero; the ROS node logs it and keeps running where it can.
    Programming errors (a wrong argument type in our own code) stay ordinary Python exceptions.
    """


class InvalidValueError(AlikedError, ValueError):
    """A parameter or option of the right type with a value outside what it may be (``top_k=0``, a NaN)."""


class InvalidTypeError(AlikedError, TypeError):
    """A parameter or option of the wrong type (``top_k=2.5``, ``score_threshold="0.5"``)."""


class MissingPackageError(AlikedError, ImportError):
    """An optional package that a feature needs is not installed; the message names the pip command."""


class DiskFullError(AlikedError, OSError):
    """The disk (or quota) that holds an output is full; the message says what was kept and what to do."""
