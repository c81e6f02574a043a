"""Picture augmentation on the device, as batched tensor ops: one random draw per sample per batch.

Real photos and scans of digits differ from MNIST in slant, size, stroke width, blur, contrast
and sensor noise, even after the picture pipeline has cropped, scaled and centred them. Training
on randomly varied copies teaches the model that variety. It runs on whole batches on the
training device (per-sample PIL work would make an epoch many times slower), and every random
number comes from one generator seeded from the run's seed, whose state the checkpoint keeps, so
``--resume`` stays bit-identical on the CPU.

The changes happen in "ink" units (0 = paper, 1 = full ink) on the picture the contract's steps
produce, inside any padding, so they fit every picture model whatever its layout (flat 784
vectors, (1, 28, 28), lstm's rows) and normalisation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from ptx.contract import Contract
from ptx.contract.schema import PadStep
from ptx.contract.transforms import normalize
from ptx.errors import PtxError

DEFAULT_STRENGTH = 1.0
EPOCHS_FACTOR = 3  # --augment without --epochs trains 3x the recipe's epochs (docs/models.md)


@dataclass(frozen=True)
class Augmentation:
    """The largest change of each kind at strength 1; every draw is uniform up to it, times
    ``strength``. Defaults measured on scripts/real_pictures.py (docs/models.md)."""

    strength: float = DEFAULT_STRENGTH
    rotate_degrees: float = 5.0
    scale: float = 0.05  # size x e^U(-s, s) around the pipeline's fit
    shear_degrees: float = 5.0
    translate_pixels: float = 1.0  # around the pipeline's centring
    elastic_pixels: float = 1.0  # a smooth random displacement field, 4x4 control points
    thickness: float = 1.0  # mix towards a 3x3 dilation (thicker pen) or erosion (thinner)
    blur: float = 1.0  # mix towards a 3x3 Gaussian blur
    contrast: float = 0.3  # gamma e^U(-c, c) on the ink, peak ink x U(1 - c/2, 1)
    noise: float = 0.05  # Gaussian noise of up to this standard deviation in ink units
    printed: float = 0.1  # this fraction of each batch becomes printed digits (trainers/printed.py)

    def __post_init__(self):
        if not (math.isfinite(self.strength) and 0 < self.strength <= 3):
            raise PtxError(f"augment strength {self.strength:g} must be above 0 and at most 3")
        if not 0 <= self.printed <= 1:
            raise PtxError(f"augment printed fraction {self.printed:g} must lie in [0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc) -> "Augmentation":
        """The settings a checkpoint recorded; a damaged or foreign entry is one clear error."""
        known = {f.name for f in fields(cls)}
        if not isinstance(doc, dict) or set(doc) - known or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in doc.values()):
            raise PtxError(f"the checkpoint's augment settings {doc!r:.80} are not ones this ptx knows; "
                           "train again without --resume")
        return cls(**doc)


class Augmenter:
    """Applies an Augmentation to batch-first model inputs of one contract."""

    def __init__(self, augmentation: Augmentation, contract: Contract, device: torch.device, seed: int):
        picture = contract.picture
        if picture is None:
            raise PtxError(f"--augment varies pictures; {contract.model} takes {contract.kind.value} input")
        self.aug = augmentation
        self.pad = sum(step.pixels for step in contract.tensor_steps if isinstance(step, PadStep))
        self.canvas = picture.canvas
        # mnist-digit fits every picture's ink to a box and centres its mass: warped digits are fitted
        # again the same way. fashion-product fits differently (longest edge, bounding-box centre),
        # so its warps are kept as they fall.
        self.refits = picture.pipeline == "mnist-digit"
        self.box = picture.options.get("box", picture.canvas)
        self.ink_threshold = picture.options.get("ink_threshold", 0.2)
        side = self.canvas + 2 * self.pad
        # What paper (raw 0) and full ink (raw 255) become after the contract's steps.
        levels = normalize(np.array([[[0]], [[255]]], dtype=np.uint8).repeat(self.canvas, 1).repeat(self.canvas, 2),
                           contract).reshape(2, side, side)[:, self.pad, self.pad]
        self.paper, self.ink = float(levels[0]), float(levels[1])
        self.side = side
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._blur_kernel = _gaussian_kernel(0.8).to(device)
        self.printed = self._printed_bank(contract) if augmentation.printed > 0 else None

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def restore(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def _uniform(self, n: int, limit: float) -> torch.Tensor:
        """n draws from U(-limit, limit) x strength."""
        return (torch.rand(n, device=self.device, generator=self.generator) * 2 - 1) * (limit * self.aug.strength)

    def _printed_bank(self, contract: Contract):
        """Printed digits as model inputs on the device, grouped by label; None unless the labels
        are the ten digits (a Fashion model has nothing to learn from them)."""
        if tuple(contract.labels) != tuple(str(d) for d in range(10)) or contract.picture.pipeline != "mnist-digit":
            return None
        from .printed import printed_digits

        raw, labels, self.fonts, _ = printed_digits(contract.picture)
        self.drawn = len(np.unique(raw.reshape(len(raw), -1), axis=0))  # the bank repeats some to weigh families
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=10)
        bank = torch.from_numpy(normalize(raw[order], contract)).to(self.device)
        starts = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]])).to(self.device)
        return bank, starts, torch.from_numpy(counts).to(self.device)

    def _mix_printed(self, batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Replace a random ``printed`` fraction of the batch by printed digits of the same labels."""
        bank, starts, counts = self.printed
        n = len(batch)
        chosen = torch.rand(n, device=self.device, generator=self.generator) < self.aug.printed
        pick = torch.rand(n, device=self.device, generator=self.generator)
        index = starts[labels] + (pick * counts[labels]).long().clamp(max=counts[labels] - 1)
        mask = chosen.reshape(n, *([1] * (batch.dim() - 1)))
        return torch.where(mask, bank[index], batch)

    def __call__(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.printed is not None and labels is not None:
            batch = self._mix_printed(batch, labels)
        n, c, s, p = len(batch), self.canvas, self.side, self.pad
        pictures = batch.reshape(n, 1, s, s)
        ink = (pictures[:, :, p:p + c, p:p + c] - self.paper) / (self.ink - self.paper)
        ink = self._warp(ink)
        ink = self._stroke(ink)
        ink = self._photometric(ink)
        out = pictures.clone()
        out[:, :, p:p + c, p:p + c] = self.paper + ink * (self.ink - self.paper)
        return out.reshape(batch.shape)

    def _warp(self, ink: torch.Tensor) -> torch.Tensor:
        """Rotation, shear and an elastic field change the digit's shape; then (mnist-digit) the digit
        is fitted again the way the picture pipeline fits a user's picture (its longest side to the
        box, its centre of mass to the middle), so that training never sees a digit placed or sized
        as no real picture will be; scale and shift then jitter that fit a little."""
        n, c, a = len(ink), self.canvas, self.aug
        angle = self._uniform(n, math.radians(a.rotate_degrees))
        shear = torch.tan(self._uniform(n, math.radians(a.shear_degrees)))
        cos, sin = torch.cos(angle), torch.sin(angle)
        # theta maps output coordinates to where they sample the input: the inverse of
        # rotate(shear(x)).
        inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # R^-1
        unshear = torch.stack([torch.stack([torch.ones_like(shear), -shear], 1),
                               torch.stack([torch.zeros_like(shear), torch.ones_like(shear)], 1)], 1)
        theta = torch.cat([unshear @ inverse, torch.zeros(n, 2, 1, device=self.device)], 2)
        grid = F.affine_grid(theta, [n, 1, c, c], align_corners=False)
        control = self._uniform(n * 2 * 16, a.elastic_pixels * 2 / c).reshape(n, 2, 4, 4)
        grid = grid + F.interpolate(control, size=(c, c), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        warped = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return self._refit(warped) if self.refits else warped

    def _refit(self, ink: torch.Tensor) -> torch.Tensor:
        n, c, a = len(ink), self.canvas, self.aug
        index = torch.arange(c, device=self.device)
        inked = ink[:, 0] > self.ink_threshold
        rows, cols = inked.any(2), inked.any(1)
        height = torch.where(rows, index, -1).amax(1) - torch.where(rows, index, c).amin(1) + 1
        width = torch.where(cols, index, -1).amax(1) - torch.where(cols, index, c).amin(1) + 1
        longest = torch.maximum(height, width).clamp(min=1).float()
        zoom = torch.where(rows.any(1), self.box / longest, torch.ones_like(longest)) * torch.exp(self._uniform(n, a.scale))
        mass = ink[:, 0].sum((1, 2)).clamp(min=1e-6)
        cy = (ink[:, 0].sum(2) * index).sum(1) / mass
        cx = (ink[:, 0].sum(1) * index).sum(1) / mass
        # In grid units (pixel i is at (2i + 1) / c - 1): output pixel c/2 shows the centre of mass.
        middle = (2 * (c / 2) + 1) / c - 1
        shift = torch.stack([self._uniform(n, a.translate_pixels), self._uniform(n, a.translate_pixels)], 1) * (2 / c)
        source = torch.stack([(2 * cx + 1) / c - 1, (2 * cy + 1) / c - 1], 1)
        scale = (1 / zoom)[:, None]
        offset = source - scale * (middle + shift)
        theta = torch.zeros(n, 2, 3, device=self.device)
        theta[:, 0, 0], theta[:, 1, 1] = scale[:, 0], scale[:, 0]
        theta[:, :, 2] = offset
        grid = F.affine_grid(theta, [n, 1, c, c], align_corners=False)
        return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _stroke(self, ink: torch.Tensor) -> torch.Tensor:
        """Thicker or thinner pens, then a blur of a random amount."""
        n = len(ink)
        mix = self._uniform(n, self.aug.thickness)[:, None, None, None].clamp(-1, 1)
        thicker = F.max_pool2d(ink, 3, stride=1, padding=1)
        thinner = -F.max_pool2d(-ink, 3, stride=1, padding=1)
        ink = torch.where(mix > 0, ink + mix * (thicker - ink), ink - mix * (thinner - ink))
        amount = self._uniform(n, self.aug.blur).abs()[:, None, None, None].clamp(0, 1)
        blurred = F.conv2d(ink, self._blur_kernel, padding=1)
        return ink + amount * (blurred - ink)

    def _photometric(self, ink: torch.Tensor) -> torch.Tensor:
        n, a = len(ink), self.aug
        gamma = torch.exp(self._uniform(n, a.contrast))[:, None, None, None]
        peak = 1 - self._uniform(n, a.contrast / 2).abs()[:, None, None, None]
        sigma = self._uniform(n, a.noise).abs()[:, None, None, None]
        noise = torch.randn(ink.shape, device=self.device, generator=self.generator) * sigma
        return (ink.clamp(0, 1) ** gamma * peak + noise).clamp(0, 1)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    x = torch.tensor([-1.0, 0.0, 1.0])
    line = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel = line[:, None] * line[None, :]
    return (kernel / kernel.sum()).reshape(1, 1, 3, 3)
