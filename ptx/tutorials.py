"""What the tutorial references in `ptx models` and `ptx train --help` mean ("000 §6", "003 lecture
12"): ptx builds the models a set of PyTorch tutorials documents, and each model names the one it
comes from. Torch-free: the CLI prints it in --help."""

TUTORIALS = {
    "000": "the main PyTorch tutorial (Chinese); §N is its section: §2 linear regression, §3 softmax regression "
           "and an MLP, §4-§5 MLPs and a CNN, §6 ConvNet, §7 LSTM",
    "002": "the official PyTorch quickstart (Chinese): FashionMNIST's NeuralNetwork, a LeNet",
    "003": "notes on a 13-lecture PyTorch course; lecture N: linear and logistic regression, the diabetes MLP, "
           "softmax MNIST, CNNs, Inception, ResNet, RNN, GRU",
    "004": "an MNIST walk-through (784-512-512-10, Adam)",
}


def legend(width: int = 100) -> str:
    """One entry per tutorial, wrapped under its number, for the end of a table or a --help text."""
    import textwrap

    return "\n".join(textwrap.fill(text, width, initial_indent=f"{key}  ", subsequent_indent=" " * 5)
                     for key, text in TUTORIALS.items())
