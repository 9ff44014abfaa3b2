"""The NVML device sampled is the GPU that is torch's cuda:N (outside case 04: with
CUDA_VISIBLE_DEVICES=1 the sampler read NVML index 0, another GPU, with status ok). A stand-in NVML
with two GPUs, as NVML sees them whatever CUDA_VISIBLE_DEVICES says: GPU 1's used memory rises by
2 GiB while sampled, GPU 0 stays idle."""
from __future__ import annotations

import sys
import time
import types

import pytest

from bench.measure.device import device_name
from bench.measure.memory import NvmlSampler, nvml_handle

UUIDS = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-1111-1111-1111-111111111111"]


def fake_nvml(names=("Stub GPU-A", "Stub GPU-B")) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.queried = []
    start = {}

    def memory(handle):
        nvml.queried.append(handle)
        rises = handle == 1 and time.monotonic() - start["t"] > 0.02
        return types.SimpleNamespace(used=(1 << 30) + (2 << 30 if rises else 0))

    nvml.nvmlInit = lambda: start.update(t=time.monotonic())
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: len(names)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetHandleByUUID = lambda uuid: UUIDS.index(uuid)
    nvml.nvmlDeviceGetName = lambda h: names[h]
    nvml.nvmlDeviceGetMemoryInfo = memory
    return nvml


@pytest.fixture
def nvml(monkeypatch):
    module = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(name, raising=False)
    return module


def sample(index=0, uuid=None) -> NvmlSampler:
    with NvmlSampler(index, uuid=uuid) as sampler:
        time.sleep(0.1)
    return sampler


def test_case_04_visible_device_1_in_pci_order_reads_nvml_index_1(nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    sampler = sample(0)
    assert sampler.status == "ok" and sampler.peak_used_mib == 2048.0
    assert set(nvml.queried) == {1}
    assert device_name("cuda", cuda_initialised=False) == "Stub GPU-B"


def test_mixed_models_in_cuda_order_are_unavailable_not_another_gpu(nvml, monkeypatch):
    """CUDA's default order is fastest first: with two models, ordinal 1 need not be NVML index 1."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    sampler = sample(0)
    assert sampler.status.startswith("unavailable: cannot tell which NVML device is cuda:0")
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in sampler.status and sampler.peak_used_mib is None
    assert nvml.queried == []
    assert device_name("cuda", cuda_initialised=False) == "cuda (name unavailable)"


def test_one_model_keeps_pci_order_even_fastest_first(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(names=("H200", "H200")))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert sample(0).peak_used_mib == 2048.0


@pytest.mark.parametrize("visible,index,expected", [
    (UUIDS[1], 0, 2048.0),  # a UUID entry
    (f"0,{UUIDS[1]}", 1, 2048.0),
    (f"{UUIDS[1]},0", 1, 0.0),  # cuda:1 is physical GPU 0 (idle)
])
def test_uuid_entries_in_cuda_visible_devices(nvml, monkeypatch, visible, index, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # for the index entries
    sampler = sample(index)
    assert sampler.status == "ok" and sampler.peak_used_mib == expected


def test_the_uuid_from_torch_wins_over_the_environment(nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # would say GPU 0
    assert sample(0, uuid=UUIDS[1]).peak_used_mib == 2048.0


@pytest.mark.parametrize("visible,words", [("0", "not among"), ("", "not among"), ("abc", "neither")])
def test_an_ordinal_outside_the_visible_set_is_unavailable(nvml, monkeypatch, visible, words):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    index = 1 if visible == "0" else 0
    sampler = sample(index)
    assert sampler.status.startswith("unavailable") and words in sampler.status and sampler.peak_used_mib is None


def test_nvml_handle_refuses_an_ordinal_nvml_does_not_have(nvml):
    with pytest.raises(LookupError, match="NVML sees 2"):
        nvml_handle(nvml, 5, environ={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})


def test_a_baseline_read_before_the_workload_is_what_the_peak_subtracts(monkeypatch):
    """The sampler is entered after the timed steps, when the allocator's pool is already reserved:
    a baseline read on entry would hide it (peak 0 for a repeated step). Given the reading taken
    before the workload existed (context only), the peak is what the step holds beyond the context."""
    from bench.measure.memory import nvml_used_bytes

    gpu = {"used": 1 << 30}  # one GPU: the context only
    nvml = fake_nvml(names=("Stub GPU",))
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=gpu["used"])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    before_workload, status = nvml_used_bytes(0)
    assert status == "ok" and before_workload == 1 << 30
    gpu["used"] += 2 << 30  # the pool the timed steps reserved, still held when the sampled step runs
    with NvmlSampler(0) as on_entry:
        time.sleep(0.02)
    with NvmlSampler(0, baseline_used_bytes=before_workload) as given:
        time.sleep(0.02)
    assert on_entry.peak_used_mib == 0.0  # what the old order reported
    assert given.status == "ok" and given.peak_used_mib == 2048.0 and given.baseline_used_mib == 1024.0


def test_nvml_used_bytes_says_why_when_nvml_is_absent(monkeypatch):
    from bench.measure.memory import nvml_used_bytes

    monkeypatch.setitem(sys.modules, "pynvml", None)
    used, status = nvml_used_bytes(0)
    assert used is None and status.startswith("unavailable: pynvml")


def test_without_nvidia_ml_py_the_nvml_cells_say_how_to_install_it(monkeypatch):
    """nvidia-ml-py is the optional `gpu` extra: without it the cells are unavailable, not an error."""
    import sys

    from bench.measure.memory import NvmlSampler, nvml_used_bytes

    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    used, status = nvml_used_bytes(0)
    assert used is None and status.startswith("unavailable: pynvml cannot be imported") and ".[gpu]" in status
    with NvmlSampler(0) as sampler:
        pass
    assert sampler.status == status
