"""Has a classifier learned anything? One rule, used where training ends and where `ptx runs` lists
runs (torch-free: it reads the numbers training kept in metrics.json).

A model that gives one label for (almost) every test sample, or scores no better than always
answering the test set's commonest label, looks fine on every other screen: it loads, exports,
verifies and answers with confidence. This names it.
"""
from __future__ import annotations

import numpy as np

ONE_LABEL_SHARE = 0.95  # one label for at least this share of the test answers
CHANCE_MARGIN = 0.02  # accuracy within this of the commonest label's share is no better than guessing it
MIN_ANSWERS = 20  # fewer test answers than this (logistic's 3 points) say nothing either way


def prediction_spread(predicted: np.ndarray, truth: np.ndarray, names: tuple[str, ...] | None = None) -> dict:
    """What the verdict needs from one evaluation, as plain values for metrics.json: the share of
    the answers given to the most frequent predicted label (and that label's name), and the share
    of the commonest true label."""
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    truth = np.asarray(truth).ravel().astype(np.int64)
    if predicted.size == 0 or predicted.min() < 0 or truth.size == 0 or truth.min() < 0:
        return {}
    counts = np.bincount(predicted)
    top = int(counts.argmax())
    return {"test_top_label": names[top] if names and top < len(names) else str(top), "test_top_share": round(float(counts.max() / predicted.size), 4),
            "test_majority_share": round(float(np.bincount(truth).max() / truth.size), 4),
            "test_answers": int(predicted.size)}


def degenerate(row: dict) -> str | None:
    """Why the evaluation ``row`` (a metrics.json epoch row) shows a model that learned nothing
    useful, as a phrase; None when it did learn, or when the row cannot tell (regression, an old
    run, too few test answers)."""
    accuracy, top, majority = row.get("test_accuracy"), row.get("test_top_share"), row.get("test_majority_share")
    if not all(isinstance(v, (int, float)) for v in (accuracy, top, majority)) \
            or row.get("test_answers", 0) < MIN_ANSWERS or majority >= ONE_LABEL_SHARE:
        return None  # a test set that is itself (almost) one label cannot show it
    if top >= ONE_LABEL_SHARE:
        return f"predicts {str(row.get('test_top_label'))!r} for {top:.0%} of the test samples (test accuracy {accuracy:.4f})"
    if accuracy <= majority + CHANCE_MARGIN:
        return (f"scores test accuracy {accuracy:.4f}, no better than always answering the commonest label "
                f"({majority:.4f})")
    return None


def advice(epochs: int | None, recipe_epochs: int | None, lr: float | None) -> str:
    """What usually helps, for the one line training prints."""
    if isinstance(epochs, int) and isinstance(recipe_epochs, int) and epochs < recipe_epochs:
        return (f"train the recipe's {recipe_epochs} epochs (this run had {epochs}: add --resume --epochs "
                f"{recipe_epochs} to continue it), or try a larger --lr")
    now = f" (this run: {lr:g})" if isinstance(lr, (int, float)) else ""
    return f"try a larger --lr{now}, e.g. 10x, or more --epochs; docs/models.md lists what each recipe reaches"
