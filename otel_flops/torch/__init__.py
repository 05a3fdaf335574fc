"""PyTorch backend: a TorchDispatchMode that counts every ATen op, and its phase detection."""
