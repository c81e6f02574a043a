"""One exception family: every message says what was wrong and what to do about it."""


class PtxError(Exception):
    """An error the user can act on; the CLI prints it as one line and exits with ``exit_code``."""

    exit_code = 2


class UnknownModelError(PtxError):
    pass


class DataError(PtxError):
    pass


class CheckpointError(PtxError):
    pass


class ArtifactError(PtxError):
    pass


class BackendUnavailableError(PtxError):
    pass


class InputError(PtxError):
    """A bad input file or value; the other inputs of the same call still run."""


class ValidationError(PtxError):
    """An export disagreed with eager PyTorch: the artifact was not kept."""

    exit_code = 1
