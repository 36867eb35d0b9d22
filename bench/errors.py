"""The one exception type that means "the user asked for something that cannot be done", and how errors are worded
in its one-line messages."""


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


def first_line(error: Exception) -> str:
    """The first line of an error's message (its type's name when the message is empty)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def redact(url: str) -> str:
    """A storage URL without its password, for messages (an unparsable URL is shown as given)."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


def one_line(message: str) -> str:
    """`message` with every character that is not printable shown escaped as Python writes it (a newline as \\n,
    an escape as \\x1b, a NUL as \\x00): the line the command line prints for an error, which a name or path
    given by the user can then neither break into two lines nor colour."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in message)


def quoted(value: object) -> str:
    """`value` (a path, a name, a field a user wrote) as a message quotes it: as it is when every character is
    printable, else in Python's repr notation, so that a newline, a carriage return, an escape sequence or a NUL
    is shown escaped and the message stays one line that the input cannot forge or colour."""
    text = str(value)
    return text if text.isprintable() else repr(text)
