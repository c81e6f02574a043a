"""One model-agnostic training loop, driven by the spec (pytorch/examples mnist/main.py, boringly).

Data lives as tensors on the device and is sliced per batch: no per-sample DataLoader work, which
is the biggest single speed-up for models this small.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ptx.atomic import atomic_path
from ptx.cuda_math import quiet_rnn_weight_warning
from ptx.errors import CheckpointError, DataError, PtxError, TrainingDivergedError
from ptx.contract import CHECKPOINT_FILE, Contract, Task
from ptx.contract.datasets import check_fit, is_known_dataset
from ptx.contract.degenerate import advice, degenerate, prediction_spread
from ptx.contract.transforms import decisions, normalize
from ptx.models import ModelSpec
from ptx.models.spec import Loss, Optimizer

from .augment import Augmentation, Augmenter
from .checkpoint import (CURVES_FILE, METRICS_FILE, checkpoint_bytes, guard_run_folder, load_checkpoint,
                         set_aside_run, stale_exports, versions)
from .data import Dataset
from .plots import write_curves
from .step import CudaGraphs, ProgressLoss, TrainStep, capture_refusal

VALIDATION_SAMPLES = 64  # real test samples kept in the checkpoint, so export can validate alone
# Real training samples kept for int8 calibration (ptx export --format onnx-int8): a few hundred
# cover the activation ranges; seeded, so the same run keeps the same ones.
CALIBRATION_SAMPLES = 512
EVAL_BATCH = 1000
AUGMENT_SEED_OFFSET = 1_000_003
# Drawing curves.png costs ~0.2 s; for epochs shorter than that (linreg's 100 epochs take 0.01 s
# each) it would dominate the run, so the plot is redrawn at most this often, and always at the end.
CURVES_EVERY_S = 2.0


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    seed: int = 42
    device: str = "auto"
    limit: int | None = None
    model_args: dict | None = None  # overrides of the spec's model_args, e.g. linreg's bias
    augment: dict | None = None  # Augmentation fields when training pictures with --augment


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PtxError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PtxError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def make_optimizer(spec: ModelSpec, model: torch.nn.Module, lr: float,
                   notice: Callable[[str], None] = lambda _: None) -> torch.optim.Optimizer:
    """The recipe's optimizer, with fused kernels where the installed torch has them for this device."""
    if spec.recipe.optimizer is Optimizer.SGD:
        make = lambda **fused: torch.optim.SGD(model.parameters(), lr=lr, momentum=spec.recipe.momentum, **fused)
    else:
        make = lambda **fused: torch.optim.Adam(model.parameters(), lr=lr, **fused)
    # Fused kernels update all parameters in one pass (+25% images/s for mlp with Adam on CPU
    # here). Which optimizer has them on which device depends on the torch version and build
    # (pyproject allows torch 2.4): torch's constructor refuses what it lacks, so ask it.
    try:
        return make(fused=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        device = next(model.parameters()).device.type
        notice(f"notice: torch {torch.__version__} has no fused {spec.recipe.optimizer.value} on {device} "
               f"({str(exc).splitlines()[0][:80]}); using the standard one")
        return make()


class FlatCrossEntropy(torch.nn.Module):
    """Cross entropy over the last axis: (B, C) logits, or (B, T, C) per position (rnn-hello)."""

    def forward(self, logits, target):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def make_loss(spec: ModelSpec) -> torch.nn.Module:
    # bce: the seeds' binary models end in a sigmoid and train with BCELoss on the probability.
    losses = {Loss.CROSS_ENTROPY: FlatCrossEntropy, Loss.MSE: torch.nn.MSELoss, Loss.BCE: torch.nn.BCELoss,
              Loss.BCE_SUM: lambda: torch.nn.BCELoss(reduction="sum")}
    return losses[spec.recipe.loss]()


def to_model_layout(batch_first: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    axis = spec.input.batch_axis
    return batch_first if axis == 0 else batch_first.movedim(0, axis)


def _targets(y: np.ndarray, spec: ModelSpec, device) -> torch.Tensor:
    if spec.task is Task.CLASSIFICATION:
        return torch.as_tensor(y, dtype=torch.long, device=device)
    return torch.as_tensor(y, dtype=torch.float32, device=device).reshape(len(y), -1)


def evaluate(model, spec: ModelSpec, contract: Contract, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Test metrics under inference_mode: accuracy for classifiers, MSE for regression."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), EVAL_BATCH):
            outputs.append(model(to_model_layout(x[start:start + EVAL_BATCH], spec)))
    out = torch.cat(outputs)
    labels = decisions(out.cpu().numpy(), contract)
    if labels is None:
        return {"test_mse": torch.nn.functional.mse_loss(out, y).item()}
    truth = y.cpu().numpy().reshape(labels.shape)
    return {"test_accuracy": float((labels == truth).mean()), **prediction_spread(labels, truth, contract.labels)}


def _rng_state(shuffle: torch.Generator, augmenter: Augmenter | None) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if augmenter is not None:
        state["augment"] = augmenter.state()
        state["augment_device"] = augmenter.device.type  # a CUDA generator's state means nothing to a CPU one
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, shuffle: torch.Generator, augmenter: Augmenter | None) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if augmenter is not None:
        if not isinstance(state.get("augment"), torch.Tensor):
            raise CheckpointError("the checkpoint was trained with --augment but holds no augmentation state "
                                  "(damaged); train again without --resume")
        saved_device = state.get("augment_device", augmenter.device.type)
        if saved_device != augmenter.device.type:
            raise CheckpointError(f"this run was trained with --augment on {saved_device}, whose random stream cannot "
                                  f"continue on {augmenter.device.type}: resume with --device {saved_device}")
        try:
            augmenter.restore(state["augment"])
        except RuntimeError:  # a checkpoint from before augment_device was kept, or a damaged one
            raise CheckpointError("the checkpoint's augmentation state does not fit this device's generator: "
                                  "resume on the device it was trained on") from None
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(spec: ModelSpec, dataset: Dataset, config: TrainConfig, out_dir: Path, *,
          resume: bool = False, overwrite: bool = False, force: bool = False, capture: bool = True,
          log: Callable[[str], None] = print, _graphs=None) -> dict:
    """Train ``spec`` on ``dataset``; after every epoch write checkpoint.pt, metrics.json, curves.png.

    A folder that already holds a run of this model is refused unless the caller says what to do
    with it: ``resume`` continues it, ``overwrite`` replaces it (its files move to previous/ when
    the first new epoch is saved, so an interrupted start keeps it in place). A folder holding
    another model's run is refused unless ``force``.

    On CUDA the step is captured as a CUDA graph and replayed (trainers/step.py) unless ``capture``
    is False or PTX_TRAIN_CAPTURE=0; ``_graphs`` lets tests run that path on the CPU."""
    if resume and overwrite:
        raise PtxError("--resume continues the run and --overwrite replaces it: give one of them")
    if is_known_dataset(dataset.name):  # data of another kind: one line, before any folder (a caller's own
        check_fit(spec.name, spec.takes, dataset.name)  # Dataset, under a name ptx does not know, is theirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_FILE
    guard_run_folder(out_dir, spec.name, force, resume=resume, overwrite=overwrite)
    device = choose_device(config.device)
    contract = spec.contract(dataset.name)  # the data decides labels and picture pipeline

    previous = None
    if resume:
        previous = load_checkpoint(ckpt_path, expected_model=spec.name)
        saved = previous["config"]
        # The saved run's settings win (except the epoch count) so the result matches an
        # uninterrupted run.
        config = TrainConfig(**{**saved, "epochs": config.epochs, "device": config.device})
        if previous["epoch"] >= config.epochs:
            raise CheckpointError(f"{ckpt_path} already has {previous['epoch']} epochs; "
                                  f"pass a larger --epochs to train further")
    dataset = dataset.limit(config.limit)
    if not len(dataset.x_train) or not len(dataset.x_test):  # each loader refuses this first, naming its file
        raise DataError(f"{dataset.name} has {len(dataset.x_train)} training and {len(dataset.x_test)} test samples; "
                        "training needs at least 1 of each")
    _notice_unseen_labels(dataset, contract, log)

    unknown = set(config.model_args or {}) - set(spec.model_args)
    if unknown:
        raise PtxError(f"{spec.name} has no option {', '.join(sorted(unknown))}")
    model_args = {**spec.model_args, **(config.model_args or {})}
    torch.manual_seed(config.seed)
    model = spec.build(**model_args).to(device)
    if device.type == "cuda":  # training keeps torch's TF32 defaults (docs/gpu.md); only the RNN flood goes
        quiet_rnn_weight_warning()
    optimizer = make_optimizer(spec, model, config.lr, notice=log)
    loss_fn = make_loss(spec)
    shuffle = torch.Generator().manual_seed(config.seed)
    # Its own stream (seed offset), so that augmenting leaves the shuffling order as it was.
    augmenter = (Augmenter(Augmentation.from_dict(config.augment), contract, device, config.seed + AUGMENT_SEED_OFFSET)
                 if config.augment else None)
    history: list[dict] = []
    first_epoch = 0
    if previous is not None:
        model.load_state_dict(previous["state_dict"])
        optimizer.load_state_dict(previous["optimizer"])
        _restore_rng(previous["rng"], shuffle, augmenter)
        history = list(previous["metrics"]["epochs"])
        first_epoch = previous["epoch"]
        log(f"resuming {spec.name} from epoch {first_epoch} of {config.epochs} ({ckpt_path})")

    x_train = torch.from_numpy(normalize(dataset.x_train, contract)).to(device)
    y_train = _targets(dataset.y_train, spec, device)
    x_test = torch.from_numpy(normalize(dataset.x_test, contract)).to(device)
    y_test = _targets(dataset.y_test, spec, device)
    n = len(x_train)
    log(f"training {spec.name} on {device} | {len(x_train)} train / {len(x_test)} test samples | "
        f"{spec.recipe.optimizer.value} lr={config.lr} batch={config.batch_size} epochs={config.epochs} seed={config.seed}"
        + (f" | augment strength {augmenter.aug.strength:g}" if augmenter else ""))
    if augmenter is not None and augmenter.printed is not None:
        log(f"augment: {augmenter.aug.printed:.0%} of each batch are printed digits "
            f"({augmenter.drawn} drawn in {len(augmenter.fonts)} typefaces matplotlib and Pillow ship)")

    kept = _kept_samples(dataset)
    why_not = capture_refusal(device, capture, full_batches=n // config.batch_size) if _graphs is None else None
    graphs = _graphs if _graphs is not None else (CudaGraphs(device) if why_not is None else None)
    if why_not is not None and device.type == "cuda":
        log(f"notice: training steps run eagerly: {why_not}")
    step = TrainStep(model, loss_fn, optimizer, lambda x: to_model_layout(x, spec), batch_size=config.batch_size,
                     graphs=graphs, notice=log)
    last_plot = time.monotonic()
    for epoch in range(first_epoch, config.epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        started = time.perf_counter()
        total_loss = torch.zeros((), device=device)  # summed on the device: no sync per batch
        first_bad = torch.full((), -1, device=device)  # index of the first batch with a non-finite loss
        batches = range(0, n, config.batch_size)
        halfway, half = started, len(batches) // 2  # when the second half of the batches began
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
                   mininterval=0.5, dynamic_ncols=True, disable=None)
        shown = ProgressLoss(device)
        for i, start in enumerate(bar):
            if i == half:
                halfway = time.perf_counter()
            idx = order[start:start + config.batch_size]
            inputs = x_train[idx] if augmenter is None else augmenter(x_train[idx], y_train[idx])
            loss = step(inputs, y_train[idx])
            total_loss += loss * len(idx)
            # Recorded on the device (no sync per batch); checked once the epoch is over.
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), i, first_bad)
            if i % 20 == 0 and not bar.disable:
                seen = start + len(idx)
                shown.post(total_loss, seen)  # no host sync on CUDA: shown a few steps late
                bar.set_postfix(loss="..." if shown.value is None else f"{shown.value:.4f}",
                                img_s=f"{seen / max(time.perf_counter() - started, 1e-9):,.0f}")
        bar.close()
        _refuse_divergence(int(first_bad), epoch + 1, model, ckpt_path)
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "loss": total_loss.item() / n, **evaluate(model, spec, contract, x_test, y_test),
               "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 1)}
        if spec.report:
            row.update(spec.report(model))
        history.append(row)
        log(_summary(row, config.epochs))
        left = config.epochs - epoch - 1
        if epoch == first_epoch and left >= 2:  # how long the rest takes, at this machine's rate
            # The first half of the first epoch pays one-time costs (kernel warm-up, caches filling):
            # its second half runs at the rate the other epochs will; evaluation is timed as it ran.
            trained = started + seconds
            steady = (trained - halfway) * len(batches) / (len(batches) - half)
            per_epoch = steady + time.perf_counter() - trained
            log(f"the other {left} epochs take about {_duration(left * per_epoch)} at this rate (Ctrl-C stops; "
                "--resume continues from the last whole epoch)")
        metrics = _metrics(history, spec, dataset, config)

        def set_aside_replaced_run():
            moved = set_aside_run(out_dir)
            if moved:
                log(f"kept the run this one replaces in {out_dir / 'previous'} ({', '.join(moved)})")

        _save_run(out_dir, spec, contract, model_args, model, optimizer, _rng_state(shuffle, augmenter), config,
                  dataset, kept, metrics, epoch + 1,
                  before_replace=set_aside_replaced_run if overwrite and epoch == first_epoch else None)
        if epoch + 1 == config.epochs or time.monotonic() - last_plot >= CURVES_EVERY_S:
            write_curves(out_dir / CURVES_FILE, metrics)
            last_plot = time.monotonic()
    why = degenerate(history[-1])  # one line: a model that learned nothing looks fine elsewhere
    if why:
        log(f"warning: {spec.name} {why}: it has learned nothing useful yet; "
            f"{advice(config.epochs, spec.recipe.epochs, config.lr)}")
    stale = stale_exports(out_dir) if resume else []
    if stale:
        log(f"notice: {', '.join(stale)} in {out_dir} were exported from an earlier checkpoint of this run: "
            f"re-run `ptx export {spec.name}` (predict warns until then)")
    return _metrics(history, spec, dataset, config)


def _notice_unseen_labels(dataset: Dataset, contract: Contract, log: Callable[[str], None]) -> None:
    """A label with no training sample (a --limit below the classes, a folder without it) can never
    be predicted: the run goes on (a smoke run may want just that) but says so."""
    if contract.task is not Task.CLASSIFICATION or dataset.y_train.ndim != 1:
        return
    seen = set(np.unique(dataset.y_train).tolist())
    missing = [name for i, name in enumerate(contract.labels) if i not in seen]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        log(f"notice: the {len(dataset.y_train):,} training samples hold no example of {shown}; "
            "the model cannot learn to predict what it never sees")


def _refuse_divergence(first_bad_batch: int, epoch: int, model, ckpt_path: Path) -> None:
    """A non-finite loss or weight stops the run before anything is written: the last good
    checkpoint stays as it was."""
    # One host read for all the weights, not one per parameter tensor.
    finite = [torch.isfinite(p).all() for p in model.parameters()]
    if first_bad_batch < 0 and (not finite or bool(torch.stack(finite).all())):
        return
    where = f"batch {first_bad_batch + 1}" if first_bad_batch >= 0 else "its last batch (weights)"
    kept = f"{ckpt_path} is unchanged" if ckpt_path.exists() else "nothing was written"
    raise TrainingDivergedError(f"training diverged: non-finite loss at epoch {epoch}, {where}; {kept}. "
                                "Try a smaller --lr")


def _duration(seconds: float) -> str:
    """A time to wait, as a person says it: 40 s, 3 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def _summary(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['loss']:.4f}"]
    if "test_accuracy" in row:
        parts.append(f"test accuracy {row['test_accuracy']:.4f}")
    if "test_mse" in row:
        parts.append(f"test MSE {row['test_mse']:.4f}")
    if "w" in row:
        parts.append(f"w {row['w']:.4f}")
    if "b" in row:
        parts.append(f"b {row['b']:.4f}")
    parts += [f"{row['seconds']:.1f}s", f"{row['images_per_s']:,.0f} samples/s"]
    return " | ".join(parts)


def _metrics(history: list[dict], spec: ModelSpec, dataset: Dataset, config: TrainConfig) -> dict:
    final = history[-1]
    # dataset, planned_epochs, lr: what `ptx runs` lists without loading the checkpoint (torch-free).
    out = {"model": spec.name, "epochs": history, "dataset": dataset.name, "planned_epochs": config.epochs,
           "lr": config.lr}
    for key in ("test_accuracy", "test_mse", "w", "b"):
        if key in final:
            out[f"final_{key}"] = final[key]
    return out


def _kept_samples(dataset: Dataset) -> dict:
    """Real samples every checkpoint of the run carries: test samples for export's validation, and
    seeded training samples for int8 calibration (the same ones after every epoch)."""
    calibration = np.sort(np.random.default_rng(0).permutation(len(dataset.x_train))[:CALIBRATION_SAMPLES])
    return {"samples": {"x": torch.from_numpy(np.ascontiguousarray(dataset.x_test[:VALIDATION_SAMPLES])),
                        "y": torch.from_numpy(np.ascontiguousarray(dataset.y_test[:VALIDATION_SAMPLES]))},
            "calibration": {"x": torch.from_numpy(np.ascontiguousarray(dataset.x_train[calibration]))}}


def _save_run(out_dir, spec, contract, model_args, model, optimizer, rng, config, dataset, kept, metrics,
              epoch, before_replace: Callable[[], None] | None = None) -> None:
    """``before_replace`` runs once the new files are written in full, before they are renamed into
    place: --overwrite sets the replaced run aside there, so a full disk leaves it where it was."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data = checkpoint_bytes({
        "model": spec.name,
        "model_args": model_args,
        "state_dict": state_dict,
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "rng": rng,
        "config": asdict(config),
        "recipe": {k: getattr(v, "value", v) for k, v in asdict(spec.recipe).items()},  # enums -> plain values
        "contract": contract.to_dict(),
        "dataset": {"name": dataset.name, "source": dataset.source},
        **kept,
        "metrics": metrics,
        "versions": versions(),
    })
    # Both files are written in full before either replaces its predecessor, so a full disk keeps
    # the previous pair; then metrics.json is renamed first (the inner block), so a run killed
    # between the renames leaves it ahead of the checkpoint, never behind.
    with atomic_path(out_dir / CHECKPOINT_FILE) as ckpt_tmp, atomic_path(out_dir / METRICS_FILE) as metrics_tmp:
        ckpt_tmp.write_bytes(data)
        metrics_tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        if before_replace is not None:
            before_replace()
