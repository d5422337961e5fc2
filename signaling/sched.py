"""Short scheduler time slices for the node's process.

A node is idle most of the time and wakes for a message it should relay at once. On a
core shared with other work (the platform's backend, a log shipper, the kernel's own
threads), Linux's scheduler (EEVDF) lets whatever runs there finish its slice first:
about 1.4 ms by default on a 2-core machine, and such stalls were most of the relay
latency beyond p99 on the benchmark machine (bench/README.md, session 10). Since Linux
6.12 a task may ask for a shorter slice (`sched_setattr`'s `sched_runtime`, without
privileges): it then preempts on wakeup, and is preempted sooner in turn. It does not
change the process's share of the CPU.

Media workers keep the default: their work is long stretches of codec CPU, which
short slices would only interrupt more often.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct
import sys

log = logging.getLogger(__name__)

# sched_setattr(2)'s number, where it is known.
_SYSCALLS = {"x86_64": 314, "aarch64": 274}


def request_slice(microseconds: int) -> bool:
    """Ask for `microseconds` slices for this process's threads (later ones inherit it);
    0 restores the kernel's default. False where the kernel or platform has no such
    call or refuses it (older kernels ignore the value: True, and nothing changes)."""
    number = _SYSCALLS.get(platform.machine())
    if sys.platform != "linux" or number is None:
        return False
    policy = os.sched_getscheduler(0)
    if policy not in (os.SCHED_OTHER, os.SCHED_BATCH):  # real-time: someone chose that
        return False
    # struct sched_attr, its first version: size, policy, flags, nice, priority, runtime
    # (the slice, in ns), deadline, period. The policy and nice stay what they are.
    attr = ctypes.create_string_buffer(
        struct.pack("IIQiIQQQ", 48, policy, 0, os.getpriority(os.PRIO_PROCESS, 0), 0,
                    microseconds * 1000, 0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    for task in os.listdir("/proc/self/task"):
        if libc.syscall(number, int(task), attr, 0) != 0:
            error = ctypes.get_errno()
            log.info("scheduler slice of %d µs not set: %s", microseconds, os.strerror(error))
            return False
    return True
