"""Errors raised for bad input. Each names the valid choices, so a user can fix the call.

All subclass ``ValueError`` so that generic ``except ValueError`` handlers still work.
"""


class InterpError(ValueError):
    """Base class of the toolkit's input errors."""


class UnsupportedArchitecture(InterpError):
    """The model's family has no adapter row."""


class UnknownHook(InterpError):
    """A hook name that the model does not have (or a layer out of range)."""


class PromptError(InterpError):
    """Empty prompt list, empty prompt, or a prompt longer than the model's context."""


class LoadError(InterpError):
    """A model or pair that cannot be found, loaded or quantised here."""
