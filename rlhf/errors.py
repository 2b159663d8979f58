"""The base of every error meant for a person rather than a traceback."""


class UserError(RuntimeError):
    """A request refused or a resource unusable, said in one sentence."""
