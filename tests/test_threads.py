"""Default threads follow what the process is given: affinity, cgroup quotas (v1/v2), SLURM, OMP_NUM_THREADS."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genodae import _threads
from genodae._threads import available_cpus, cgroup_quota, configure, quota_cpus

V1_MOUNTINFO = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
                "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
                "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def tree(root: Path, cgroup: str, mountinfo: str | None, files: dict[str, str]) -> Path:
    """A fake / with /proc/self/cgroup, /proc/self/mountinfo and cgroup files."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    if mountinfo is not None:
        (root / "proc/self/mountinfo").write_text(mountinfo)
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def cpus(root, env=None, affinity=frozenset({0, 1, 2, 3})):
    return available_cpus(env=env or {}, root=root, affinity=set(affinity))


# --- the cgroup quota -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("max 100000\n", None), ("50000 100000\n", 0.5), ("100000 100000", 1.0), ("150000 100000\n", 1.5),
    ("200000", 2.0),  # the period defaults to 100000
    ("", None), ("garbage\n", None), ("abc 100000", None), ("100000 0", None), ("-5 100000", None),
])
def test_v2_cpu_max(tmp_path, text, expected):
    root = tree(tmp_path, "0::/job\n", V2_MOUNTINFO, {"sys/fs/cgroup/job/cpu.max": text})
    assert cgroup_quota(root) == expected


@pytest.mark.parametrize("quota, period, expected", [
    ("100000", "100000", 1.0), ("-1", "100000", None), ("50000\n", "100000\n", 0.5), ("x", "100000", None),
    ("100000", "", None), ("100000", "0", None),
])
def test_v1_cfs_quota(tmp_path, quota, period, expected):
    root = tree(tmp_path, "9:name=systemd:/\n2:cpu,cpuacct:/slurm/job1\n0::/\n", V1_MOUNTINFO.replace(
        "rw,cpu\n", "rw,cpu,cpuacct\n"), {"sys/fs/cgroup/cpu/slurm/job1/cpu.cfs_quota_us": quota,
                                         "sys/fs/cgroup/cpu/slurm/job1/cpu.cfs_period_us": period})
    assert cgroup_quota(root) == expected


def test_v1_quota_of_a_parent_cgroup_applies(tmp_path):
    d = "sys/fs/cgroup/cpu/"
    root = tree(tmp_path, "1:cpu:/batch/job7\n", V1_MOUNTINFO, {
        d + "cpu.cfs_quota_us": "-1", d + "cpu.cfs_period_us": "100000",
        d + "batch/cpu.cfs_quota_us": "200000", d + "batch/cpu.cfs_period_us": "100000",
        d + "batch/job7/cpu.cfs_quota_us": "-1", d + "batch/job7/cpu.cfs_period_us": "100000"})
    assert cgroup_quota(root) == 2.0


def test_v2_tightest_quota_on_the_way_up(tmp_path):
    root = tree(tmp_path, "0::/a/b\n", V2_MOUNTINFO, {"sys/fs/cgroup/a/cpu.max": "100000 100000",
                                                      "sys/fs/cgroup/a/b/cpu.max": "300000 100000"})
    assert cgroup_quota(root) == 1.0


def test_container_sees_its_cgroup_as_the_mount_root(tmp_path):
    mountinfo = "500 400 0:29 /docker/abc /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
    root = tree(tmp_path, "3:cpu,cpuacct:/docker/abc\n", mountinfo, {
        "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "150000", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})
    assert cgroup_quota(root) == 1.5


def test_default_mount_points_without_mountinfo(tmp_path):
    root = tree(tmp_path, "0::/\n", None, {"sys/fs/cgroup/cpu.max": "100000 100000"})
    assert cgroup_quota(root) == 1.0


@pytest.mark.parametrize("cgroup, mountinfo", [
    ("", V2_MOUNTINFO), ("nonsense\n", V2_MOUNTINFO), ("0::/x\n", "broken line\n - \n"),
    ("1:cpu:/gone\n", V1_MOUNTINFO),  # the folder does not exist
])
def test_unreadable_cgroup_information_is_no_quota(tmp_path, cgroup, mountinfo):
    assert cgroup_quota(tree(tmp_path, cgroup, mountinfo, {})) is None


def test_no_proc_at_all(tmp_path):
    assert cgroup_quota(tmp_path) is None
    assert cpus(tmp_path)[0] == 4


@pytest.mark.parametrize("quota, n", [(0.1, 1), (0.5, 1), (1.0, 1), (1.5, 1), (1.99, 1), (2.0, 2), (2.5, 2), (7.9, 7), (0.3 * 10, 3)])
def test_quota_rounding(quota, n):
    assert quota_cpus(quota) == n


# --- available_cpus: the minimum of what applies ------------------------------------------------------------


def test_affinity_alone(tmp_path):
    n, reason = cpus(tmp_path)
    assert n == 4
    assert reason == "affinity 4; no cgroup quota; SLURM_CPUS_PER_TASK unset; OMP_NUM_THREADS unset"


def test_quota_below_affinity(tmp_path):
    root = tree(tmp_path, "0::/j\n", V2_MOUNTINFO, {"sys/fs/cgroup/j/cpu.max": "100000 100000"})
    n, reason = cpus(root)
    assert n == 1 and "cgroup quota 1 CPU" in reason and "affinity 4" in reason


def test_affinity_below_quota(tmp_path):
    root = tree(tmp_path, "0::/j\n", V2_MOUNTINFO, {"sys/fs/cgroup/j/cpu.max": "800000 100000"})
    assert cpus(root, affinity={0, 1})[0] == 2


@pytest.mark.parametrize("env, n", [
    ({"SLURM_CPUS_PER_TASK": "2"}, 2), ({"OMP_NUM_THREADS": "3"}, 3), ({"OMP_NUM_THREADS": "3,1"}, 3),
    ({"SLURM_CPUS_PER_TASK": "3", "OMP_NUM_THREADS": "2"}, 2), ({"SLURM_CPUS_PER_TASK": "16"}, 4),
    ({"SLURM_CPUS_PER_TASK": "many"}, 4), ({"SLURM_CPUS_PER_TASK": ""}, 4), ({"OMP_NUM_THREADS": "0"}, 4),
    ({"OMP_NUM_THREADS": "-2"}, 4),
])
def test_environment(tmp_path, env, n):
    got, reason = cpus(tmp_path, env)
    assert got == n
    if env.get("SLURM_CPUS_PER_TASK", "").isdigit():
        assert f"SLURM_CPUS_PER_TASK {env['SLURM_CPUS_PER_TASK']}" in reason


def test_at_least_one(tmp_path):
    root = tree(tmp_path, "0::/j\n", V2_MOUNTINFO, {"sys/fs/cgroup/j/cpu.max": "1000 100000"})
    assert cpus(root, affinity={0})[0] == 1


def test_real_process_sees_something():
    n, reason = available_cpus()
    assert n >= 1 and "affinity" in reason


# --- configure: torch follows, explicit wins, ranks share, logged once --------------------------------------


@pytest.fixture
def restore_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(_threads, "_state", {"logged": None, "set": None, "caller": None})
    yield
    torch.set_num_threads(before)


def fake_available(monkeypatch, n):
    monkeypatch.setattr(_threads, "available_cpus", lambda env=None: (n, f"cgroup quota {n} CPU"))


def test_auto_sets_torch(monkeypatch, restore_torch):
    torch.set_num_threads(2)
    _threads._state["caller"] = None
    fake_available(monkeypatch, 1)
    assert configure(0, env={}) == 1 and torch.get_num_threads() == 1


def test_explicit_wins(monkeypatch, restore_torch):
    fake_available(monkeypatch, 1)
    assert configure(2, env={}) == 2 and torch.get_num_threads() == 2


def test_ranks_share_the_node(monkeypatch, restore_torch):
    torch.set_num_threads(8)
    fake_available(monkeypatch, 8)
    assert configure(0, env={"LOCAL_WORLD_SIZE": "4"}) == 2
    assert configure(0, env={"LOCAL_WORLD_SIZE": "16"}) == 1
    assert configure(0, env={"LOCAL_WORLD_SIZE": "junk"}) == 8


def test_never_above_what_the_caller_set(monkeypatch, restore_torch):
    fake_available(monkeypatch, 4)
    torch.set_num_threads(1)  # a caller's choice, before genodae
    assert configure(0, env={}) == 1
    # after an explicit setting, auto goes back to the caller's value, not to genodae's last one
    torch.set_num_threads(3)
    _threads._state.update(set=None)
    assert configure(2, env={}) == 2
    assert configure(0, env={}) == 3


def test_logged_once(monkeypatch, restore_torch, caplog):
    torch.set_num_threads(2)
    fake_available(monkeypatch, 1)
    with caplog.at_level(logging.INFO, logger="genodae"):
        configure(0, env={})
        configure(0, env={})
        configure(0, env={})
    msgs = [r.getMessage() for r in caplog.records if "torch thread" in r.getMessage()]
    assert msgs == ["using 1 torch thread (cgroup quota 1 CPU)"]


def test_training_logs_the_threads_once(counts_adata, monkeypatch, restore_torch, caplog):
    import genodae

    a = counts_adata.copy()
    genodae.pp.prepare(a, n_top_genes=100)
    fake_available(monkeypatch, 1)
    with caplog.at_level(logging.INFO, logger="genodae"):
        m = genodae.DAE(n_latent=3, hidden=(8,), epochs=1, device="cpu").fit(a)
        m.annotate(a)
    msgs = [r.getMessage() for r in caplog.records if "torch thread" in r.getMessage()]
    assert msgs == ["using 1 torch thread (cgroup quota 1 CPU)"]
    assert torch.get_num_threads() == 1


# --- a real cgroup (root, cgroup v1 cpu controller, as on the bench machine) ----------------------------------

CG = Path("/sys/fs/cgroup/cpu/genodae-test")


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists(),
                    reason="needs root and a cgroup v1 cpu controller")
def test_real_cgroup_v1_quota(tmp_path):
    CG.mkdir(exist_ok=True)
    try:
        (CG / "cpu.cfs_period_us").write_text("100000")
        (CG / "cpu.cfs_quota_us").write_text("100000")
        code = "from genodae._threads import available_cpus; print(available_cpus()[0], available_cpus()[1])"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: (CG / "cgroup.procs").write_text(str(os.getpid())),
                           env={k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                                                  "SLURM_CPUS_PER_TASK")})
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("1 ") and "cgroup quota 1 CPU" in r.stdout
    finally:
        for _ in range(50):
            try:
                CG.rmdir()
                break
            except OSError:
                import time

                time.sleep(0.1)
