"""000 §5, the "optimized" model: conv 32/64 3x3 with pooling, FC 3136-512-10 with dropout."""
from torch import nn

from .registry import register
from .spec import Optimizer, mnist_model, seed_recipe


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1), nn.ReLU(),  # (B, 32, 28, 28)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1), nn.ReLU(),  # (B, 64, 14, 14)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (B, 64, 7, 7)
            nn.Flatten(),  # (B, 3136)
            nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(512, 10),
        )

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10)
        return self.layers(x)


register(mnist_model(
    name="cnn",
    description="conv 32/64 3x3 + max-pools, FC 3136-512-10 with Dropout(0.2), Adam",
    seed="000 §5",
    builder=SmallCNN,
    recipe=seed_recipe(epochs=100, optimizer=Optimizer.ADAM, lr=1e-3),
    params=(1 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (3136 * 512 + 512) + (512 * 10 + 10),
))
