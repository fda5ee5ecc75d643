"""The one exception type for errors a user can cause and can fix."""


class AlikedError(Exception):
    """A problem with the user's input or setup, with a sentence that says what to do.

    Command-line tools print the message and exit non-zero; the ROS node logs it and keeps running where it can.
    Programming errors (a wrong argument type in our own code) stay ordinary Python exceptions.
    """
