"""One optimisation step, run eagerly or replayed from a captured CUDA graph.

A small model's step on a GPU is bound by kernel launches, not arithmetic (issue 28: an H100 idle
most of each 2 ms convnet step). Capturing the whole step (forward, loss, backward, optimizer)
once and replaying it launches it as one graph. This follows PyTorch's "whole network capture"
recipe (torch.cuda.graphs docs): a few warm-up steps on a side stream, static input buffers, and
grads set to None before capture so backward allocates them in the graph's pool. torch.compile's
"reduce-overhead" mode would do the same through Inductor, at a compile cost per model and a C++
compiler on the machine; a manual capture runs the very kernels the eager step runs.

Only full batches are replayed (the graph's shapes are fixed); the last, shorter batch of an epoch
runs eagerly. Warm-up and replayed steps are real training steps on real batches: nothing is
trained twice or skipped, so the recipe is the tutorial's. Any failure to capture (a model that
syncs with the host, a torch without CUDA graphs) falls back to the eager step with a notice.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

CAPTURE_ENV = "PTX_TRAIN_CAPTURE"  # 0: never capture (what `ptx train --no-capture` sets for one run)
WARMUP_STEPS = 3  # eager steps on a side stream before capture: lazy state (optimizer, cuDNN) is made there
MIN_REPLAYS = 8  # fewer full batches than warm-up + this: capture costs more than it saves


def capture_refusal(device: torch.device, requested: bool = True, env: dict | None = None,
                    full_batches: int | None = None) -> str | None:
    """Why the step is not captured here, or None when it is: the one place that decides."""
    env = os.environ if env is None else env
    if not requested:
        return "turned off (--no-capture)"
    if env.get(CAPTURE_ENV, "").strip() == "0":
        return f"turned off ({CAPTURE_ENV}=0)"
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if not hasattr(torch.cuda, "CUDAGraph") or not hasattr(torch.cuda, "graph"):
        return f"torch {torch.__version__} has no CUDA graphs"
    if full_batches is not None and full_batches < WARMUP_STEPS + MIN_REPLAYS:
        return f"{full_batches} full batches per epoch: too few to repay a capture"
    return None


class CudaGraphs:
    """The CUDA side of capture: warm-up on a side stream, capture into a torch.cuda.CUDAGraph.

    Everything runs with ``device`` current: on cuda:N the module's kernels go to cuda:N's current
    stream, and torch.cuda.graph's own default side stream belongs to whichever device was current
    when it was first made (cuda:0), so the capture stream is this device's own side stream.
    ``capture_error_mode``: torch's "global" (training: one thread) refuses unsafe CUDA calls of any
    thread during a capture; a server's other threads run other models meanwhile, so inference
    captures with "thread_local"."""

    def __init__(self, device: torch.device, capture_error_mode: str = "global"):
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.capture_error_mode = capture_error_mode
        self.graph = None

    def warmup(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream()
            self.stream.wait_stream(current)
            with torch.cuda.stream(self.stream):
                out = fn()
            current.wait_stream(self.stream)
        return out

    def capture(self, fn: Callable[[], object]) -> Callable[[], None]:
        """Record ``fn``'s kernels without running them; the returned callable runs them."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=self.stream,
                                                              capture_error_mode=self.capture_error_mode):
            fn()
        self.graph = graph  # kept alive: its memory pool holds the static grads and outputs
        device = self.device

        def replay():
            with torch.cuda.device(device):
                graph.replay()

        return replay


class EagerGraphs:
    """Stands in for CudaGraphs where there is no GPU (tests): the same protocol, where "capture"
    records the function and each replay calls it, so everything around the graph (static
    buffers, warm-up count, the tail batch, the fallback) runs on the CPU too."""

    def __init__(self, fail: BaseException | None = None):
        self.fail = fail
        self.captures = 0

    def warmup(self, fn):
        return fn()

    def capture(self, fn):
        self.captures += 1
        if self.fail is not None:
            raise self.fail
        return fn


class TrainStep:
    """``step(inputs, targets) -> loss``: one training step on a batch (batch-first ``inputs``).

    The loss returned is a detached device tensor; a replayed step returns the graph's static loss,
    valid until the next call (the caller folds it into its device-side sums right away, in stream
    order, so no host sync is needed)."""

    def __init__(self, model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 layout: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int, graphs=None,
                 notice: Callable[[str], None] = lambda _: None):
        self.model, self.loss_fn, self.optimizer, self.layout = model, loss_fn, optimizer, layout
        self.batch_size = batch_size
        self.graphs = graphs  # None: eager only (today's step)
        self.notice = notice
        self.warmed = 0
        self.replay: Callable[[], None] | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.replays = 0

    @property
    def captured(self) -> bool:
        return self.replay is not None

    def eager(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.layout(inputs)), targets)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.graphs is None or len(inputs) != self.batch_size:
            return self.eager(inputs, targets)  # no capture, or the epoch's shorter last batch
        if self.replay is None:
            if self.warmed < WARMUP_STEPS:
                self.warmed += 1
                return self.graphs.warmup(lambda: self.eager(inputs, targets))
            if not self._capture(inputs, targets):
                return self.eager(inputs, targets)
        x, y, loss = self.static
        x.copy_(inputs)
        y.copy_(targets)
        self.replay()
        self.replays += 1
        return loss

    def _capture(self, inputs: torch.Tensor, targets: torch.Tensor) -> bool:
        """Capture the step on buffers shaped like this batch; False (and eager from now on) when
        the model or this torch cannot be captured."""
        x, y = torch.empty_like(inputs), torch.empty_like(targets)
        loss = torch.zeros((), dtype=torch.float32, device=inputs.device)
        flipped = _make_capturable(self.optimizer)

        def step():
            loss.copy_(self.eager(x, y))

        try:
            self.replay = self.graphs.capture(step)
        except Exception as exc:  # torch raises RuntimeError and others; the eager step is always right
            for group in flipped:
                group["capturable"] = False
            self.optimizer.zero_grad(set_to_none=True)  # grads made during capture hold no values
            self.graphs = None
            self.notice(f"notice: the training step could not be captured as a CUDA graph "
                        f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                        "running it eagerly (--no-capture silences this)")
            return False
        self.static = (x, y, loss)
        return True


def _make_capturable(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Adam refuses capture unless its groups are ``capturable`` (its step counts live on the
    device then); SGD has no such flag. The groups switched, so a failed capture can undo it."""
    flipped = []
    for group in optimizer.param_groups:
        if group.get("capturable") is False:
            group["capturable"] = True
            flipped.append(group)
    return flipped


class ProgressLoss:
    """The running loss for the progress bar without a host sync per step: on CUDA the sum is
    copied to pinned host memory asynchronously and shown once the copy has landed (a few steps
    late); on the CPU reading it costs nothing."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.value: float | None = None
        if self.cuda:
            self.host = torch.zeros((), dtype=torch.float32, pin_memory=True)
            self.event: torch.cuda.Event | None = None

    def post(self, total: torch.Tensor, seen: int) -> None:
        if not self.cuda:
            self.value = total.item() / seen
            return
        if self.event is not None and not self.event.query():
            return  # the last copy is still in flight: keep showing the previous value
        if self.event is not None:
            self.value = self.host.item() / self.seen
        self.host.copy_(total, non_blocking=True)
        self.seen = seen
        self.event = torch.cuda.Event()
        self.event.record()
