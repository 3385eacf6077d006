"""A small error hierarchy: every error a user can cause carries a title and a clear message.

Pages render these with `st.error`; the CLI prints them and exits non-zero. Anything else is a bug.
"""


class PrunescopeError(Exception):
    """Base class: a problem the user can act on."""

    title = "Error"

    def __init__(self, message: str, title: str | None = None):
        super().__init__(message)
        self.message = message
        if title:
            self.title = title


class ConfigError(PrunescopeError):
    title = "Invalid setting"


class WeightsError(PrunescopeError):
    title = "Weights could not be loaded"


class DataError(PrunescopeError):
    title = "Dataset unavailable"


class ConstraintError(PrunescopeError):
    title = "Impossible constraint"


class SpaceError(PrunescopeError):
    title = "Model cannot be pruned"


class StoreError(PrunescopeError):
    title = "Results database"


class ExportError(PrunescopeError):
    title = "Export failed"


class Cancelled(Exception):
    """Raised inside a long job (training, export) when its cancel event is set; not an error."""
