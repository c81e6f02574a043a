"""000 §6: ConvNet, conv 10/20 k5 with dropout, FC 320-50-10 with dropout."""
from torch import nn

from .registry import register
from .spec import mnist_model, seed_recipe


class ConvNet(nn.Module):
    def __init__(self, output_dim: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 10, kernel_size=5),  # (B, 10, 24, 24)
            nn.MaxPool2d(kernel_size=2),  # (B, 10, 12, 12)
            nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5),  # (B, 20, 8, 8)
            nn.Dropout(),
            nn.MaxPool2d(kernel_size=2),  # (B, 20, 4, 4)
            nn.ReLU(),
        )
        self.fc = nn.Sequential(
            nn.Linear(320, 50), nn.ReLU(), nn.Dropout(),
            nn.Linear(50, output_dim),
        )

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10)
        x = self.conv(x).flatten(1)  # (B, 320)
        return self.fc(x)


register(mnist_model(
    name="convnet",
    description="ConvNet: conv 10/20 k5 + dropout, FC 320-50-10 + dropout",
    seed="000 §6",
    builder=ConvNet,
    recipe=seed_recipe(epochs=20),
    params=(10 * 25 + 10) + (20 * 10 * 25 + 20) + (320 * 50 + 50) + (50 * 10 + 10),
))
