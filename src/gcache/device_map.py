"""One model over several devices: parsing ``--device-map``, and where each part of a dispatched model runs.

``--device-map`` is handed to transformers (which dispatches the model with accelerate): a strategy such as
``auto`` (fill the GPUs in order, then CPU RAM, then disk), or an explicit map from module names to devices,
given inline as JSON or as a JSON/YAML file::

    --device-map auto
    --device-map '{"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.norm": 1, "lm_head": 1}'
    --device-map maps/qwen3-14b-2gpu.yaml

Modules mapped to ``"cpu"`` or ``"disk"`` are *offloaded*: their weights wait there (parameters on the ``meta``
device) and accelerate's hooks bring them to the execution device for each forward. So a dispatched module's
parameters do not say where it computes; :func:`execution_device` does, and KV messages keep each layer's keys
and values where that layer computes (:func:`layer_devices`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["DEVICE_MAP_STRATEGIES", "parse_device_map", "offloads_to_disk", "uses_gpu"]

#: The strategies transformers / accelerate accept by name.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_device_map(value: str | dict | None) -> str | dict[str, Any] | None:
    """``--device-map`` as transformers takes it: a strategy name, or ``{module name: device}``.

    Args:
        value (str | dict | None): a strategy (:data:`DEVICE_MAP_STRATEGIES`), one device for the whole model
            (``cuda:1``), a JSON object, the path of a ``.json`` / ``.yaml`` file holding one, or a mapping.

    Returns:
        str | dict | None: the strategy name or the mapping; None stays None.

    Raises:
        ValueError: not a strategy, not a mapping, or a device that is neither an int nor a string.
    """
    if value is None or isinstance(value, dict):
        mapping = value
    elif value in DEVICE_MAP_STRATEGIES or _is_device(value):
        return value  # a strategy, or one device for the whole model ("cuda:1")
    elif value.lstrip().startswith("{"):
        try:
            mapping = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"device map is not valid JSON ({err.msg} at column {err.colno})") from None
    elif Path(value).is_file():
        import yaml

        try:
            mapping = yaml.safe_load(Path(value).read_text())  # YAML reads JSON too
        except yaml.YAMLError as err:
            raise ValueError(f"device map file {value} is not JSON/YAML: {err}") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"device map file {value} must hold a mapping of module names to devices")
    else:
        raise ValueError(f"device map {value!r} is neither a strategy ({', '.join(DEVICE_MAP_STRATEGIES)}), "
                         "a JSON object nor an existing .json/.yaml file")
    if mapping is None:
        return None
    if not mapping:
        raise ValueError("device map is empty: map module names (e.g. model.layers.0) to devices")
    for name, device in mapping.items():
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise ValueError(f"device map: {name!r} -> {device!r}; a device is a GPU index, 'cpu', 'disk', 'cuda:1' ...")
    return dict(mapping)


_DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu|npu|hpu)(:\d+)?)$")


def _is_device(value: str) -> bool:
    return bool(_DEVICE.match(value))


def offloads_to_disk(device_map: str | dict | None) -> bool:
    """Whether transformers may put weights on disk (it then needs an ``offload_folder``)."""
    if isinstance(device_map, dict):
        return "disk" in device_map.values()
    return device_map in DEVICE_MAP_STRATEGIES  # a strategy offloads to disk when RAM runs out


def uses_gpu(device_map: str | dict | None) -> bool:
    """Whether weights may go to an accelerator: any strategy (it fills the GPUs first), or a map naming one."""
    device_map = parse_device_map(device_map)
    if isinstance(device_map, dict):
        return any(isinstance(d, int) or d not in ("cpu", "disk", "meta") for d in device_map.values())
    return device_map is not None and device_map != "cpu"
