"""The allocator policy of CPU training: freed blocks stay in the heap for the next step (no page
faults to get them back), the memory goes back afterwards, and the opt-out works."""

import platform
import resource

import pytest
import torch

from cifar_cnn.hardware import allocator_policy, describe, keep_freed_memory

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
BLOCK = 64 * 2**20 // 4  # float32 elements in 64 MiB: above glibc's largest mmap threshold (32 MiB)


def faults_of_a_training_like_loop(steps: int = 6) -> int:
    """Minor page faults while allocating, touching and freeing a 64 MiB block `steps` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        torch.empty(BLOCK).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@glibc
def test_freed_blocks_are_reused_without_page_faults_while_training(monkeypatch):
    monkeypatch.delenv("CIFAR_CNN_ALLOCATOR", raising=False)
    cpu = torch.device("cpu")
    as_it_comes = faults_of_a_training_like_loop()
    with keep_freed_memory(cpu) as policy:
        faults_of_a_training_like_loop(2)  # the heap grows to hold the block once
        # The best of three rounds: now and then another allocation in the process takes the kept
        # block's place and a round faults it in again; without the policy every round faults 6 blocks.
        kept = min(faults_of_a_training_like_loop() for _ in range(3))
        inside = resident_mib()
    after = resident_mib()
    assert policy == "keep"
    assert as_it_comes > 6 * 10_000  # 16,384 pages of 4 KiB per block, faulted in again every time
    assert kept < as_it_comes / 10
    assert after < inside - 32  # the kept block goes back to the kernel when training is over


@glibc
def test_the_policy_is_recorded_and_can_be_turned_off(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("CIFAR_CNN_ALLOCATOR", raising=False)
    assert allocator_policy(cpu) == "keep" and describe(cpu)["allocator"] == "keep"
    assert allocator_policy(torch.device("cuda")) == "system"  # GPU memory has its own caching allocator
    monkeypatch.setenv("CIFAR_CNN_ALLOCATOR", "system")
    assert allocator_policy(cpu) == "system" and describe(cpu)["allocator"] == "system"
    with keep_freed_memory(cpu) as policy:
        faults = faults_of_a_training_like_loop()
    assert policy == "system" and faults > 6 * 10_000
