"""The errors minillama raises for bad input, each naming the problem in its message.

Every one derives from MinillamaError, and also from the built-in type a caller would expect
(ValueError for bad values, RuntimeError for a model that cannot load), so code written
against either keeps working. The command lines print a MinillamaError as one line and exit
with status 2; any other exception escaping them is a bug (minillama/cli/errors.py)."""


class MinillamaError(Exception):
    """Bad input whose message alone tells the user what to fix."""


class InvalidRequestError(MinillamaError, ValueError):
    """A request the engine refuses (empty prompt, too long, bad sampling parameter, ...).

    Raised by `LLMEngine.add_request` before anything changes, so the engine keeps serving
    the requests it already has."""


class UnknownRequestError(InvalidRequestError, KeyError):
    """A request id the engine does not hold: never given, or aborted or forgotten since
    (LLMEngine.request). Also a KeyError, as it was before it was named, so `except KeyError`
    keeps working."""

    __str__ = Exception.__str__  # KeyError's would print the message in quotes, as a key


class ConfigError(MinillamaError, ValueError):
    """An engine setting that cannot work: a field of EngineConfig (or its command-line flag)
    of the wrong type or out of range, an unknown device, a KV cache larger than the memory."""


class ModelLoadError(MinillamaError, RuntimeError):
    """A model directory that cannot be loaded: a missing or corrupt file, a bad value in
    config.json, an unsupported architecture, or weights in a format minillama refuses to read
    (pickled `.bin`)."""


class CacheFolderError(MinillamaError, OSError):
    """The folder minillama keeps its builds in ($MINILLAMA_CACHE, else $XDG_CACHE_HOME/minillama)
    cannot take them: a file where it should be, no right to write there. Also an OSError, as
    the failed mkdir or write it stands for was: the CPU kernels' build still falls back to
    PyTorch ops on it, with its message as the warning."""


class ObserverError(MinillamaError, RuntimeError):
    """An observer raised inside one of its hooks. The engine detached it at once and finished
    what it was doing (the step, the fork) whole, so it stays consistent and keeps serving;
    `result` holds what that call would have returned (a step's outputs, a fork's id), so nothing
    is lost. The observer's own exception is the __cause__."""

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result


class UnappliedSettingWarning(UserWarning):
    """A model setting the engine runs without: a logits processor or stop rule that
    transformers' generate would apply to every request (minillama/generation_config.py). The
    model loads; where the setting acts, its tokens can differ from generate's. The command lines
    print it as one line ("prog: warning: ...")."""
