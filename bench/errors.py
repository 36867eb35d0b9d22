"""The one exception type that means "the user asked for something that cannot be done"."""


class UserError(Exception):
    """Bad input or environment (unknown name, value out of range, missing file, ...).

    The command line prints the message as one line and exits with status 2; nothing has been written.
    The message says what is wrong and, where possible, what to do about it.
    """


def field_error(error) -> str:
    """The first error of a pydantic ValidationError as one phrase: "field 'a.b': message" ('(top level)' for the
    whole input; pydantic's "Value error, " prefix of a validator's message dropped)."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"field {where!r}: {first['msg'].removeprefix('Value error, ')}"
