"""Opening a model (name, run folder, file, nn.Module) as a Model: a runner and, where a contract says, a head."""
