"""Stand-in for comfy/model_management.py: where results are kept between nodes (the CPU here)."""
import torch


def intermediate_device():
    return torch.device("cpu")
