"""The one error type the harness raises for wrong or missing inputs."""


class EvalInputError(Exception):
    """A benchmark file, folder or option is missing or not what was expected.

    The message names the file (and line, where there is one) and says what was expected; the command prints it and
    exits with status 2, without a traceback.
    """
