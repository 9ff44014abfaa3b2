"""Device arguments and names, shared by the measurement modules and every command's rows."""
from __future__ import annotations

import torch


def resolve_device(device: torch.device | str, types: tuple[str, ...] | None = None) -> torch.device:
    """A torch.device from a device or string; CUDA gets an explicit index and must exist.

    `types` restricts the accepted device types (e.g. ("cpu", "cuda") for timing).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"Expected a torch.device or a device string such as 'cpu' or 'cuda:0', got {device!r}."
        ) from exc
    if types is not None and dev.type not in types:
        raise ValueError(f"Supported device types are {', '.join(types)}; got {str(dev)!r}.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {str(dev)!r} was requested but CUDA is not available in this process.")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def device_name(device: str, cuda_initialised: bool) -> str:
    """A readable device name; never creates a CUDA context unless `cuda_initialised`."""
    if device.startswith("cuda"):
        if cuda_initialised:
            return torch.cuda.get_device_name(torch.device(device))
        try:
            import pynvml

            from bench.measure.memory import nvml_handle
            pynvml.nvmlInit()
            try:
                name = pynvml.nvmlDeviceGetName(nvml_handle(pynvml, torch.device(device).index or 0))
            finally:
                pynvml.nvmlShutdown()
            return name.decode() if isinstance(name, bytes) else name
        except Exception:
            return "cuda (name unavailable)"
    from bench.results import cpu_name

    return cpu_name()
