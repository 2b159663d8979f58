"""The base of every error meant for a person rather than a traceback, and the errors that
several modules raise."""


class UserError(RuntimeError):
    """A request refused or a resource unusable, said in one sentence."""


class TrainingError(UserError):
    """A job that cannot train, in one sentence (too little data, a bad setting, ...)."""


class WorkbenchError(UserError):
    """A request the workbench refuses, in one sentence."""


class ModelLoadError(UserError):
    """A model could not be loaded; the message names what was tried."""
