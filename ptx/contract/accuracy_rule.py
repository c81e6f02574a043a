"""A reduced precision judged by what users see (torch-free): label agreement with the reference and the change
in test accuracy on real samples, drawn the same way by export and by verify (one file, one verdict), or the
``--max-drop`` bound a file was made to hold."""
from __future__ import annotations

import numpy as np

# Reduced-precision artifacts pass when labels agree on this share of real samples and test accuracy
# drops by at most this much (absolute).
MIN_LABEL_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.005
# The real samples a reduced precision is judged on, by export and by verify alike (one file, one
# verdict): this many, drawn with this seed across the model's test split.
JUDGING_SAMPLES = 1000
JUDGING_SEED = 0
JUDGING_BATCH = 64  # verify's largest default batch: the judged backend runs the samples in these
# --max-drop X holds where the drop is at most X plus this: accuracies are counts over samples, and a
# drop of exactly X must not fail for the last bit of a float subtraction.
BOUND_SLACK = 1e-9


def judge_reduced_precision(label_agreement: float, accuracy: float | None, reference_accuracy: float | None,
                            max_drop: float | None = None) -> list[str]:
    """Why a reduced-precision backend is not usable, judged by labels and accuracy, not by atol.
    ``max_drop``: the loss its file was made to hold (``ptx export --max-drop``, in accuracy
    points), which then is the whole gate: the user named what they accept and on what measure, and
    ptx's own label rule is the default for those who named nothing."""
    if max_drop is not None:
        drop = accuracy_points(reference_accuracy - accuracy) if accuracy is not None and reference_accuracy is not None \
            else 0.0
        return [] if drop <= max_drop + BOUND_SLACK else \
            [f"accuracy {accuracy:.4f} is {drop:.2f} points below the reference (--max-drop {max_drop:g})"]
    failures = []
    if label_agreement < MIN_LABEL_AGREEMENT:
        failures.append(f"labels agree on {100 * label_agreement:.1f}% (< {100 * MIN_LABEL_AGREEMENT:.0f}%)")
    if accuracy is not None and reference_accuracy is not None and reference_accuracy - accuracy > MAX_ACCURACY_DROP:
        failures.append(f"accuracy {accuracy:.4f} is {reference_accuracy - accuracy:.4f} below the reference")
    return failures


ACCURACY_METRIC = "accuracy on "  # how ptx.metric begins where a tutorial model's bound is its test accuracy


def recorded_max_drop(metadata) -> float | None:
    """The --max-drop a tutorial model's int8 file was made to hold (``ptx.max_drop``, accuracy
    points, where ``ptx.metric`` is its test accuracy), which verify then judges it by; None for a
    file made without one, or bound on a user's own metric (which verify cannot run)."""
    value = metadata.get("max_drop")
    if value is None or not str(metadata.get("metric", "")).startswith(ACCURACY_METRIC):
        return None
    try:
        return float(str(value).split()[0])
    except ValueError:
        return None


def accuracy_points(share: float) -> float:
    """A share of samples (0.005) in accuracy points (0.5), the unit --max-drop is given in."""
    return 100.0 * share


def below_or_above(drop: float, digits: int, unit: str = "") -> str:
    """A drop in words: "0.20 points below", and a gain as "0.10 points above", not "-0.10 below"."""
    return f"{abs(drop):.{digits}f}{unit} {'below' if drop >= 0 else 'above'}"


def judging_pick(test_size: int, count: int = JUDGING_SAMPLES) -> np.ndarray:
    """Indices of the test samples a backend is judged on: a fixed-seed draw across the whole test
    split (some test sets are stored class by class, and the first N would then be one class)."""
    return np.sort(np.random.default_rng(JUDGING_SEED).permutation(test_size)[:count])
