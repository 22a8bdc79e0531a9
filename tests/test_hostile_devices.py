"""``diffiqa.devices.resolve_device``: every --device a user may type, on any machine (issue 15, item 3).

The machine is simulated (CUDA/MPS availability and the GPU count are monkeypatched), so the
messages for a laptop, a one-GPU box and a Mac are all checked here on a CPU-only machine.
"""

from __future__ import annotations

import pytest
import torch

from diffiqa.devices import resolve_device
from diffiqa.errors import ConfigError, DeviceError


@pytest.fixture
def machine(monkeypatch):
    def set_machine(gpus: int = 0, mps: bool = False, cuda_build: str | None = "12.4"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.version, "cuda", cuda_build)

    return set_machine


def test_auto_picks_cuda_when_present_else_cpu(machine):
    machine(gpus=0)
    assert resolve_device(None) == torch.device("cpu") == resolve_device("auto") == resolve_device(" AUTO ")
    machine(gpus=1, mps=True)
    assert resolve_device(None) == torch.device("cuda")  # never mps unasked


def test_existing_devices_resolve(machine):
    machine(gpus=2, mps=True)
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("CUDA:1") == torch.device("cuda", 1)
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_on_a_machine_without_cuda(machine, name):
    machine(gpus=0)
    with pytest.raises(DeviceError, match=rf"^--device {name}: no such device \(this machine has no CUDA\)$"):
        resolve_device(name)


def test_cuda_with_a_cpu_only_torch_build(machine):
    machine(gpus=0, cuda_build=None)
    with pytest.raises(DeviceError, match=r"this torch build has no CUDA"):
        resolve_device("cuda")


def test_gpu_index_beyond_the_machine(machine):
    machine(gpus=1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"^--device cuda:1: no such device \(this machine has 1 CUDA device: cuda:0\)$"):
        resolve_device("cuda:1")
    machine(gpus=2)
    with pytest.raises(DeviceError, match=r"has 2 CUDA devices: cuda:0, cuda:1\)$"):
        resolve_device("cuda:7")


def test_mps_missing_or_indexed(machine):
    machine(mps=False)
    with pytest.raises(DeviceError, match=r"^--device mps: no such device \(this machine has no MPS"):
        resolve_device("mps")
    machine(mps=True)
    with pytest.raises(DeviceError, match=r"there is one MPS device"):
        resolve_device("mps:1")


@pytest.mark.parametrize("name", ["foo", "gpu", "cuda:", "cuda:-1", "cuda:1:2", "cpu:1", "tpu", "0"])
def test_not_a_device(machine, name):
    machine(gpus=1)
    with pytest.raises(DeviceError, match=rf"^--device {name}: not a device"):
        resolve_device(name)


def test_device_error_is_a_config_error_and_names_the_option():
    with pytest.raises(ConfigError, match=r"^device= foo: not a device"):
        resolve_device("foo", what="device=")
