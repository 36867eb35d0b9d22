"""The one exception type that means "the user asked for something that cannot be done"."""


class UserError(Exception):
    """Bad input or environment (unknown name, value out of range, missing file, ...).

    The command line prints the message as one line and exits with status 2; nothing has been written.
    The message says what is wrong and, where possible, what to do about it.
    """
