#!/usr/bin/env python3
"""Write the demo's picture: a real test digit from mnist-sample, drawn dark on white paper,
200x200 and off-centre, as a person would photograph or scan it (scripts/demo.sh predicts it; the
README's predict examples read it; tests/test_readme.py makes it the same way).

    python3 scripts/demo_digit.py [OUT]      # default runs/digit.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def demo_digit(out: str | Path = "runs/digit.png") -> tuple[Path, int]:
    """Write the picture to ``out``; returns its path and the digit it shows."""
    from ptx.trainers.data import load_mnist_sample

    data = load_mnist_sample()
    digit = data.x_test[0]
    page = Image.new("L", (200, 200), 255)
    page.paste(Image.fromarray((255 - digit).astype(np.uint8)).resize((140, 140), Image.Resampling.BILINEAR), (50, 12))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.save(out)
    return out, int(data.y_test[0])


if __name__ == "__main__":
    path, label = demo_digit(sys.argv[1] if len(sys.argv) > 1 else "runs/digit.png")
    print(f"{path}: a {label} from the test split")
