"""Exceptions that map to the CLI's exit codes."""


class InputError(ValueError):
    """Bad input: a file, a shape, a dtype or a flag (the CLI exits 2).

    `kind` is the exception class the library API raises for it on every
    rank ("ValueError" or "TypeError"), so callers can catch what numpy
    would raise for the same mistake.
    """

    def __init__(self, message: str, kind: str = "ValueError"):
        super().__init__(message)
        self.kind = kind


class InputTypeError(InputError, TypeError):
    """Bad input whose natural Python exception is TypeError (e.g. dtypes)."""


class PanelCheckError(ArithmeticError):
    """A result panel failed its check (tiles' check_panels): the product is wrong.

    Raised on every rank with the same message, which names the rank that
    computed the panel and where the panel lies in C (the CLI exits 3).
    """


def raise_input_error(message: str, kind: str) -> None:
    """Raise the InputError (or InputTypeError) that `kind` names."""
    raise (InputTypeError if kind == "TypeError" else InputError)(message, kind=kind)


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
