"""How many CPU threads this process should use: what it is really given, not what the machine has.

torch's default intra-op thread count follows CPU affinity (taskset, cpusets) but not a cgroup CPU quota
(containers, some batch systems), ``SLURM_CPUS_PER_TASK`` or the ranks torchrun starts on one node; running more
threads than the CPUs one is given costs a factor of 1.5-3 (``bench/results/threads.md``).
:func:`available_cpus` takes the minimum of what applies; :func:`configure` sets torch (and, for the command
line, the BLAS pools of numpy/scipy) to it and logs the choice once.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("genodae")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _int_env(env, name: str) -> int | None:
    """A positive integer environment variable, else None (unset, empty or malformed: ignored)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        # SLURM_CPUS_PER_TASK is a plain number; OMP_NUM_THREADS may be a nested list "4,2": its first level
        value = int(raw.split(",")[0])
    except ValueError:
        return None
    return value if value > 0 else None


def _cgroup_dirs(root: Path) -> list[tuple[str, Path, Path]]:
    """(version, mount point, this process's cgroup folder) for the cgroup v2 hierarchy and the v1 ``cpu``
    controller, from /proc/self/cgroup and /proc/self/mountinfo (default mount points when mountinfo is
    unreadable)."""
    text = _read(root / "proc/self/cgroup")
    if not text:
        return []
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            paths.setdefault("v2", parts[2])
        elif "cpu" in parts[1].split(","):
            paths.setdefault("v1", parts[2])
    mounts: dict[str, tuple[str, str]] = {}  # version -> (mount root, mount point)
    for line in (_read(root / "proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3:
            continue
        fstype, options = after[0], after[2].split(",")
        if fstype == "cgroup2":
            mounts.setdefault("v2", (fields[3], fields[4]))
        elif fstype == "cgroup" and "cpu" in options:
            mounts.setdefault("v1", (fields[3], fields[4]))
    defaults = {"v2": ("/", "/sys/fs/cgroup"), "v1": ("/", "/sys/fs/cgroup/cpu")}
    out = []
    for version in ("v2", "v1"):
        if version not in paths:
            continue
        mroot, mpoint = mounts.get(version, defaults[version])
        rel = paths[version]
        # a container sees its own cgroup as the mount root; otherwise the path is relative to the mount root
        if mroot != "/" and (rel == mroot or rel.startswith(mroot.rstrip("/") + "/")):
            rel = rel[len(mroot):]
        mount = root / mpoint.lstrip("/")
        out.append((version, mount, mount / rel.strip("/")))
    return out


def _quota(version: str, folder: Path) -> float | None:
    """The CPU quota (in CPUs) set on one cgroup folder, None when unlimited, absent or malformed."""
    try:
        if version == "v2":
            text = _read(folder / "cpu.max")
            if text is None:
                return None
            fields = text.split()
            if not fields or fields[0] == "max":
                return None
            quota, period = float(fields[0]), float(fields[1]) if len(fields) > 1 else 100_000.0
        else:
            q, p = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if q is None or p is None:
                return None
            quota, period = float(q.strip()), float(p.strip())
    except (ValueError, IndexError):
        return None
    if quota <= 0 or period <= 0 or not math.isfinite(quota / period):  # v1 writes -1 for "no limit"
        return None
    return quota / period


def cgroup_quota(root: Path | str = "/") -> float | None:
    """The tightest CPU quota (in CPUs, possibly fractional) on this process's cgroup or any cgroup above it,
    v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``; None when there is none."""
    best = None
    for version, mount, folder in _cgroup_dirs(Path(root)):
        d = folder
        while True:
            q = _quota(version, d)
            if q is not None:
                best = q if best is None else min(best, q)
            if d == mount or mount not in d.parents:
                break
            d = d.parent
    return best


def quota_cpus(quota: float) -> int:
    """Threads for a CPU quota: its whole CPUs, rounded down, at least 1 (1.5 -> 1, 2.0 -> 2).

    Rounded down because a thread more than the quota pays for is throttled, and torch's threads wait for each
    other at every operation: under a 1.5-CPU quota 2 threads never trained faster than 1, and 4.6× slower on a
    busy machine (bench/results/threads.md)."""
    return max(1, math.floor(quota + 1e-9))


def available_cpus(*, env=None, root: Path | str = "/", affinity: set[int] | None = None) -> tuple[int, str]:
    """CPUs this process is really given: the minimum of its CPU affinity, a cgroup CPU quota (v1 or v2, the
    tightest on the way up its cgroup hierarchy), ``SLURM_CPUS_PER_TASK`` and ``OMP_NUM_THREADS``, those that
    apply; at least 1. Unreadable or malformed sources are ignored. Returns (count, the reason in words)."""
    env = os.environ if env is None else env
    found: list[tuple[int, str]] = []
    reasons: list[str] = []
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not on Linux
            affinity = None
    n_aff = len(affinity) if affinity else (os.cpu_count() or 1)
    found.append((n_aff, "affinity" if affinity else "cpu_count"))
    reasons.append(f"{'affinity' if affinity else 'cpu_count'} {n_aff}")
    quota = cgroup_quota(root)
    if quota is not None:
        found.append((quota_cpus(quota), "cgroup quota"))
        reasons.append(f"cgroup quota {quota:.3g} CPU")
    else:
        reasons.append("no cgroup quota")
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = _int_env(env, name)
        if value is not None:
            found.append((value, name))
        reasons.append(f"{name} {value if value is not None else 'unset'}")
    n = max(1, min(v for v, _ in found))
    return n, "; ".join(reasons)


_state: dict[str, object] = {"logged": None, "set": None, "caller": None}


def configure(num_threads: int = 0, *, blas: bool = False, env=None) -> int:
    """Set torch's intra-op threads (and its inter-op threads while that is still allowed) for this process.

    ``num_threads`` > 0 wins; 0 (auto) is :func:`available_cpus`, divided among the ranks torchrun started on
    this node (``LOCAL_WORLD_SIZE``), and never more than torch was set to by the caller
    (``torch.set_num_threads`` before genodae ran). ``blas``: also limit the BLAS/OpenMP pools numpy and scipy
    use (threadpoolctl, where installed); the command line does this, the library leaves its caller's alone.
    Logs "using N torch threads (…)" at the first call and whenever the number or its reason changes."""
    import torch

    env = os.environ if env is None else env
    current = torch.get_num_threads()
    if _state["set"] is None or current != _state["set"]:
        _state["caller"] = current  # torch's default, or what the caller set since genodae last did
    if num_threads > 0:
        n, reason = num_threads, "num_threads set"
    else:
        n, reason = available_cpus(env=env)
        ranks = _int_env(env, "LOCAL_WORLD_SIZE")
        if ranks and ranks > 1:
            n = max(1, n // ranks)
            reason += f"; {ranks} ranks on this node"
        caller = int(_state["caller"])  # type: ignore[arg-type]
        if caller < n:
            n = caller
            reason += f"; torch set to {caller} by the caller"
    if current != n:
        torch.set_num_threads(n)
    _state["set"] = n
    try:
        if torch.get_num_interop_threads() != n:
            torch.set_num_interop_threads(n)
    except RuntimeError:  # only allowed before the first parallel work of the process
        pass
    if blas:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=n)
        except Exception:  # noqa: BLE001 - not installed, or a pool it cannot set: leave them
            pass
    if _state["logged"] != (n, reason):
        _state["logged"] = (n, reason)
        log.info("using %d torch thread%s (%s)", n, "" if n == 1 else "s", reason)
    return n
