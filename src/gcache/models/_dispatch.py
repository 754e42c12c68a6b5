"""Where each part of a model dispatched over devices by accelerate (``--device-map``) computes.

Offloaded weights (mapped to ``"cpu"`` or ``"disk"``) sit on the ``meta`` device between forwards and accelerate's
hooks bring them to the execution device, so a dispatched module's parameters do not say where it computes.
"""

from __future__ import annotations

import torch

__all__ = ["execution_device", "layer_devices"]


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device, else where its weights are.

    Offloaded weights sit on the ``meta`` device between forwards, so their device says nothing.
    """
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):  # SequentialHook or one hook
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def layer_devices(model: torch.nn.Module) -> list[torch.device]:
    """The execution device of each decoder layer of a causal LM, in order (all one device unless dispatched)."""
    return [execution_device(layer) for layer in model.get_decoder().layers]
