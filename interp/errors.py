"""Errors raised for bad input. Each names the valid choices, so a user can fix the call.

All subclass ``ValueError`` so that generic ``except ValueError`` handlers still work. Every
error class of the toolkit derives from :class:`InterpError` (``tasks.errors.TaskError``,
``probes.chat.NoChatTemplate``, ``studies._common.StudyError``), so a study's CLI turns any of
them into one ``error: ...`` line. This is a leaf module: it imports nothing, which is why
``tasks`` (otherwise free of our code) may import it.
"""


class InterpError(ValueError):
    """Base class of the toolkit's input errors."""


class UnsupportedArchitecture(InterpError):
    """The model's family has no adapter row."""


class UnknownHook(InterpError):
    """A hook name that the model does not have (or a layer out of range)."""


class PromptError(InterpError):
    """A prompt of a type ``LM.run`` does not take, an empty prompt list or string, or a prompt
    longer than the model's context."""


class LoadError(InterpError):
    """A model or pair that cannot be found, loaded or quantised here, a folder without a
    model, or a device this machine does not have."""


class NoHeadHooks(UnknownHook, UnsupportedArchitecture):
    """An attention-head hook on a family whose adapter row does not name the projections it
    needs: a bad hook name for this model, and a gap in its architecture row."""
