"""One exception family: every message says what was wrong and what to do about it."""


class PtxError(Exception):
    """An error the user can act on; the CLI prints it as one line and exits with ``exit_code``."""

    exit_code = 2


class UnknownModelError(PtxError):
    """A name that is not in the registry."""


class DataError(PtxError):
    """A dataset that cannot be found or read."""


class DataMismatchError(DataError):
    """A model and data of another kind (pictures for a word model, 6 classes for a 10-class one)."""


class CheckpointError(PtxError):
    """A missing, corrupt, foreign or mismatched checkpoint."""


class ArtifactError(PtxError):
    """A missing or unreadable exported model."""


class NotPtxArtifactError(ArtifactError):
    """A model file without ptx's contract: a user's own model, run by its tensors (ptx.infer.model.opening)."""


class MissingArtifactError(ArtifactError):
    """An artifact that has not been made yet; the message names the command that makes it."""


class BackendUnavailableError(PtxError):
    """A backend this machine cannot run (no GPU, no CUDA libraries, no onnxruntime)."""


class AskedRowError(PtxError):
    """A row the user named (--backends) that cannot open: bench refuses in one line (exit 2, as for
    any file that cannot be read) rather than time other rows in its place; verify shows it as a FAIL
    row of its table (exit 1)."""


class NothingToCompareError(PtxError):
    """``ptx verify`` found nothing to compare with eager: no export yet, or no other backend runs here."""


class PtxWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI prints it as one
    `warning:` line."""


class StaleArtifactWarning(PtxWarning):
    """An artifact exported from another checkpoint than its run folder's (trained again since)."""


class UnusablePrecisionWarning(PtxWarning):
    """A reduced-precision artifact this machine's verify record (or export's judgement) found NOT
    USABLE: its labels miss the gate here."""


class OtherCpuWarning(PtxWarning):
    """A reduced-precision file quantized and timed on another kind of CPU (its ptx.cpu): its speed
    against f32 may be another here."""


class InputError(PtxError):
    """A bad input file or value; the other inputs of the same call still run."""


class ModelRunError(InputError):
    """A model's runtime failed on inputs that fit its signature (a batch the exporter specialised, an
    index out of range): one line naming the runtime and its first line of complaint."""


class TrainingDivergedError(PtxError):
    """The loss or the weights became NaN or infinite; no checkpoint of that state is written."""

    exit_code = 1


class ValidationError(PtxError):
    """An export disagreed with eager PyTorch: the artifact was not kept."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message, or its type's name when it has none: the
    runtimes raise multi-line C++ errors, and ptx's errors are one line."""
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


QUOTE_LIMIT = 60  # characters of a user's input an error message shows


def quoted(value) -> str:
    """A user's input as an error message shows it: ``repr`` when short, else its start and its size,
    so that a refusal of a whole file's text or bytes stays one readable line."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value):,} bytes"
    text = repr(value)
    if len(text) <= QUOTE_LIMIT:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else type(value).__name__
    return f"{text[:QUOTE_LIMIT]}... ({size})"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, as Ctrl-C raises KeyboardInterrupt: the same clean-up runs (scratch
    folders removed, a half-written file never renamed into place) and the CLI exits 143 (128 + SIGTERM)."""
