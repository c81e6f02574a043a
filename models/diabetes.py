"""003 lectures 7-8: the diabetes MLP 8-6-4-1 with sigmoids and BCE, on Pima Indians diabetes."""
from torch import nn

from ptx.contract import InputKind, NormalizeStep, Task

from .registry import register
from .spec import BATCH, Loss, ModelSpec, seed_recipe, tensor

FEATURES = ("pregnant", "glucose", "pressure", "triceps", "insulin", "mass", "pedigree", "age")
# Training-split statistics of the fixed seeded split (ptx.trainers.small_data.load_pima): stored in the
# spec, and so in every artifact, so that serving standardises exactly as training did.
TRAIN_MEAN = (3.8697, 122.2052, 69.5016, 20.7313, 83.1629, 32.0189, 0.4704, 33.4072)
TRAIN_STD = (3.4033, 30.9834, 17.7226, 15.8890, 118.3485, 7.7389, 0.3311, 11.9542)


class DiabetesMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(8, 6)
        self.linear2 = nn.Linear(6, 4)
        self.linear3 = nn.Linear(4, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):  # (B, 8) standardised features -> (B, 1) P(diabetes)
        x = self.sigmoid(self.linear1(x))
        x = self.sigmoid(self.linear2(x))
        return self.sigmoid(self.linear3(x))


register(ModelSpec(
    name="diabetes",
    description="diabetes MLP 8-6-4-1 with sigmoids, BCE, on Pima Indians diabetes",
    seed="003 lectures 7-8",
    builder=DiabetesMLP,
    input=tensor((BATCH, len(FEATURES)), ("batch", "feature")), kind=InputKind.VECTOR,
    features=FEATURES,
    preprocessing=(NormalizeStep(TRAIN_MEAN, TRAIN_STD),),
    labels=("neg", "pos"),
    dataset="pima",
    recipe=seed_recipe(epochs=100, loss=Loss.BCE, momentum=0.0, batch_size=32),
    params=(8 * 6 + 6) + (6 * 4 + 4) + (4 * 1 + 1),
    task=Task.BINARY,
))
