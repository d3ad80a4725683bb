"""The errors minillama raises for bad input, each naming the problem in its message."""


class InvalidRequestError(ValueError):
    """A request the engine refuses (empty prompt, too long, bad sampling parameter, ...).

    Raised by `LLMEngine.add_request` before anything changes, so the engine keeps serving
    the requests it already has."""


class ModelLoadError(RuntimeError):
    """A model directory that cannot be loaded: a missing or corrupt file, an unsupported
    architecture, or weights in a format minillama refuses to read (pickled `.bin`)."""
