"""The kernel layer: what a job process can still do if it escapes the Python-level sandbox.

Assume the attacker runs arbitrary Python (ctypes included) in the job process, as root (this
machine and CI run as root, so RLIMIT_NPROC does nothing). `contain()`, called in every job
process before the job function runs (`sandbox.pool`), installs three kernel mechanisms; none of
them can be undone by the process itself, and every thread it starts inherits them:

no_new_privs   prctl(PR_SET_NO_NEW_PRIVS): no set-uid / file-capability gains; required by the
               other two.
landlock       a Landlock domain (ctypes syscalls 444-446, the same numbers on x86_64 and aarch64)
               that handles every file-system right the running kernel's ABI knows, and grants
               READ_FILE | READ_DIR only (no write, truncate, make, remove, execute, ioctl on
               devices) beneath: the Python installation (sys.prefix, sys.base_prefix,
               sys.exec_prefix), every existing sys.path entry but '' and the current directory
               and the folders that hold a project's own packages, the directory of each imported
               top-level package and the file of each imported top-level module (for an editable
               install: /repo/sim, /repo/glia_evo, never /repo itself), /usr/lib, /usr/lib64,
               /lib, /lib64, /usr/share/zoneinfo, /etc/localtime, /dev/null, /dev/urandom, and
               the caller's `extra_read_paths`. Nothing else is readable afterwards: not /proc
               (no /proc/<pid>/environ, /proc/<pid>/mem), /tmp, /root, /home, /etc. Files already
               open stay usable. With ABI >= 4 it also forbids TCP bind/connect, with ABI >= 6
               abstract-unix-socket connections and signals to processes outside the domain.
seccomp        a BPF filter (built with pyseccomp / libseccomp in the parent, loaded in the child
               with prctl(PR_SET_SECCOMP)); default: allow. Denied with EPERM:
               - network: socket, socketpair;
               - processes: fork, vfork, clone without CLONE_THREAD or with a CLONE_NEW* flag,
                 execve, execveat (clone3 -> ENOSYS, so glibc falls back to clone: threads work);
               - signals: kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
                 pidfd_send_signal, pidfd_open, pidfd_getfd (a job cannot signal even itself;
                 faults the kernel raises -- SIGSEGV, SIGXCPU, ... -- still arrive);
               - other processes: ptrace, process_vm_readv/writev, kcmp, process_madvise,
                 process_mrelease, migrate_pages, move_pages, setpriority, sched_setscheduler,
                 sched_setparam, sched_setattr, sched_setaffinity, ioprio_set;
               - writing files: open/openat with O_WRONLY, O_RDWR, O_CREAT, O_TRUNC or O_APPEND
                 (openat2 -> ENOSYS), creat, truncate, ftruncate, fallocate, unlink(at), rmdir,
                 rename(at,at2), link(at), symlink(at), mkdir(at), mknod(at), chmod family,
                 chown family, utime family, setxattr/removexattr families, name_to_handle_at,
                 open_by_handle_at, file_setattr;
               - the system: mount, umount2, pivot_root, chroot, unshare, setns, the new mount
                 API (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr),
                 io_uring_setup/enter/register (io_uring would bypass seccomp), bpf,
                 perf_event_open, userfaultfd, keyctl, add_key, request_key, modules, kexec,
                 reboot, swapon/off, acct, quotactl, clocks, hostnames, iopl/ioperm, syslog,
                 fanotify_init, lsm_set_self_attr, POSIX and SysV IPC objects (mq_open, msgget,
                 semget, shmget);
               - limits: setrlimit; prlimit64 unless its new-limit pointer is NULL (glibc's
                 getrlimit is prlimit64(0, res, NULL, &old)).
               A system call of another ABI (x32, i386 via int 0x80) kills the process.
               `allow_fork=True` (the pool's option) leaves fork, vfork and clone allowed.

What still works after `contain()`: computing (numpy, simpy), allocating memory, importing
modules lazily from the granted directories (writing __pycache__ fails silently), reading the
clock and the time zone, os.urandom / getrandom, threads, writing to descriptors already open
(the result pipe), os._exit.

`scrub_environment()` (run by the pool in every job, kernel layer or not) empties os.environ
(which unsets the C environ too) and zeroes the process's original environment block in memory
(env_start..env_end of /proc/self/stat), so /proc/self/environ shows no secret even where
Landlock is missing. It cannot erase what the parent process holds in its own memory (a fork
copies it): secrets should not live in the engine's memory while jobs run.

`probe()` (cached per process) forks a throwaway child that tries each layer and returns a
`KernelSupport`: `.ok` (every layer available), `.available`, `.missing`, `.reason` (one line),
`.landlock_abi`. `plan(extra_read_paths, allow_fork=)` does the expensive parts once in the
parent (probe, the BPF filter, the readable paths; cached); `contain(extra_read_paths=(),
prepared=plan)` in the child installs every available layer; a layer the probe found available
that then fails to install raises `KernelLayerError` (the pool's job process then exits with its
internal-error code: the job is `crashed`, never silently unconfined). Cost per job, measured by
benchmarks/bench_sandbox.py: about 1-3 ms of the child's CPU time.

Imports only the standard library, ctypes and (lazily, in the parent) pyseccomp.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import select
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

LAYERS = ("no_new_privs", "landlock", "seccomp")

_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

# --- Landlock (include/uapi/linux/landlock.h) ----------------------------------------------------
_LANDLOCK_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE = 1 << 0
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_ABI1 = (1 << 13) - 1          # EXECUTE .. MAKE_SYM
_FS_REFER = 1 << 13               # ABI 2
_FS_TRUNCATE = 1 << 14            # ABI 3
_FS_IOCTL_DEV = 1 << 15           # ABI 5
_NET_ALL = (1 << 0) | (1 << 1)    # ABI 4: BIND_TCP, CONNECT_TCP
_SCOPE_ALL = (1 << 0) | (1 << 1)  # ABI 6: ABSTRACT_UNIX_SOCKET, SIGNAL

SYSTEM_READ_PATHS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo",
                     "/etc/localtime", "/dev/null", "/dev/urandom")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class KernelLayerError(RuntimeError):
    """A layer the probe found available could not be installed."""


@dataclass(frozen=True)
class KernelSupport:
    """Which kernel layers this machine accepts (see `probe`)."""

    available: tuple[str, ...]
    missing: tuple[str, ...]
    reason: str
    landlock_abi: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong)
_libc.clearenv.restype = ctypes.c_int
_libc.clearenv.argtypes = ()
_lock = threading.Lock()
_PROBE: KernelSupport | None = None
_BPF: dict[bool, bytes] = {}
_BPF_ERROR: str | None = None


def _errno_text(what: str) -> str:
    err = ctypes.get_errno()
    return f"{what}: {os.strerror(err) if err else 'failed'}"


# --- the environment -----------------------------------------------------------------------------
def _self_stat() -> list[bytes]:
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 8192)
    finally:
        os.close(fd)
    return data.rsplit(b")", 1)[1].split()


def scrub_environment(stat_fields: list[bytes] | None = None) -> None:
    """Empty os.environ and the C environ, and zero the original environment block.

    clearenv() plus emptying os.environ's mapping is what os.environ.clear() does (it unsets
    every variable), in one call instead of one per variable."""
    try:
        fields = stat_fields if stat_fields is not None else _self_stat()
        env_start, env_end = int(fields[47]), int(fields[48])   # fields 50, 51 of proc(5)
    except (OSError, ValueError, IndexError):
        env_start = env_end = 0
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict) and _libc.clearenv() == 0:
        data.clear()                  # os.environb shares this mapping
    else:
        os.environ.clear()
    environb = getattr(os, "environb", None)
    if environb is not None and len(environb):
        environb.clear()
    if 0 < env_start < env_end and env_end - env_start < (64 << 20):
        ctypes.memset(env_start, 0, env_end - env_start)


# --- landlock -------------------------------------------------------------------------------------
def _landlock_numbers() -> tuple[int, int, int] | None:
    return _LANDLOCK_SYSCALLS.get(platform.machine())


def landlock_abi() -> int:
    numbers = _landlock_numbers()
    if numbers is None:
        return 0
    abi = _libc.syscall(ctypes.c_long(numbers[0]), None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, int(abi))


def _handled(abi: int) -> tuple[int, int, int]:
    fs = _FS_ABI1
    if abi >= 2:
        fs |= _FS_REFER
    if abi >= 3:
        fs |= _FS_TRUNCATE
    if abi >= 5:
        fs |= _FS_IOCTL_DEV
    return fs, (_NET_ALL if abi >= 4 else 0), (_SCOPE_ALL if abi >= 6 else 0)


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def read_paths(extra: Iterable[str] = ()) -> list[str]:
    """The paths `contain()` leaves readable (see the module docstring), existing ones only."""
    prefixes = sorted({os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)
                       if p})
    try:
        cwd = os.path.abspath(os.getcwd())
    except OSError:
        cwd = None
    grant = set(prefixes)
    homes = set()            # folders outside the installation holding a project's own code
    for name, module in list(sys.modules.items()):
        if "." in name or module is None:
            continue
        file = getattr(module, "__file__", None)
        path = getattr(module, "__path__", None)
        places = []
        if isinstance(file, str) and file:
            file = os.path.abspath(file)
            places.append(os.path.dirname(file) if path is not None else file)
        elif path is not None:
            try:
                places.extend(os.path.abspath(p) for p in list(path) if isinstance(p, str))
            except Exception:
                pass
        for place in places:
            if not _under(place, prefixes):
                grant.add(place)
                homes.add(os.path.dirname(place))
    for entry in sys.path:
        if not isinstance(entry, str) or not entry:
            continue
        entry = os.path.abspath(entry)
        if entry in (cwd, "/") or entry in homes and not _under(entry, prefixes):
            continue
        grant.add(entry)
    grant.update(SYSTEM_READ_PATHS)
    grant.update(os.path.abspath(p) for p in extra)
    existing = sorted(p for p in grant if os.path.exists(p))
    directories = [p for p in existing if os.path.isdir(p)]
    return [p for p in existing        # one rule per tree: drop what a granted folder covers
            if not any(p != d and _under(p, (d,)) for d in directories)]


def _landlock_restrict(abi: int, paths: Iterable[str]) -> None:
    """Create the ruleset, grant read access beneath `paths`, restrict this thread."""
    create, add, restrict = _landlock_numbers()
    fs, net, scoped = _handled(abi)
    attr = _RulesetAttr(fs, net, scoped)
    ruleset = _libc.syscall(ctypes.c_long(create), ctypes.byref(attr),
                            ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise KernelLayerError(_errno_text("landlock_create_ruleset"))
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue        # vanished or unreachable: not granted
            try:
                allowed = _FS_READ_FILE
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed |= _FS_READ_DIR
                rule = _PathBeneathAttr(allowed & fs, fd)
                if _libc.syscall(ctypes.c_long(add), ctypes.c_int(ruleset),
                                 ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                                 ctypes.c_uint32(0)) != 0:
                    raise KernelLayerError(_errno_text(f"landlock_add_rule({path})"))
            finally:
                os.close(fd)
        if _libc.syscall(ctypes.c_long(restrict), ctypes.c_int(ruleset),
                         ctypes.c_uint32(0)) != 0:
            raise KernelLayerError(_errno_text("landlock_restrict_self"))
    finally:
        os.close(ruleset)


# --- seccomp --------------------------------------------------------------------------------------
_CLONE_THREAD = 0x00010000
_CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
              0x40000000)   # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
_WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)
_DENIED = (
    "socket", "socketpair",
    "execve", "execveat",
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal",
    "pidfd_open", "pidfd_getfd",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "process_madvise",
    "process_mrelease", "migrate_pages", "move_pages", "setpriority", "sched_setscheduler",
    "sched_setparam", "sched_setattr", "sched_setaffinity", "ioprio_set",
    "creat", "truncate", "ftruncate", "fallocate", "unlink", "unlinkat", "rmdir", "rename",
    "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "mkdir", "mkdirat",
    "mknod", "mknodat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
    "fchownat", "utime", "utimes", "utimensat", "futimesat", "setxattr", "lsetxattr",
    "fsetxattr", "setxattrat", "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
    "name_to_handle_at", "open_by_handle_at", "file_setattr",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree",
    "open_tree_attr", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open",
    "userfaultfd", "keyctl", "add_key", "request_key", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "quotactl_fd", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "iopl", "ioperm", "syslog", "fanotify_init",
    "lookup_dcookie", "nfsservctl", "vhangup", "lsm_set_self_attr", "mq_open", "msgget",
    "semget", "shmget",
    "setrlimit",
)
_PROCESS_CREATION = ("fork", "vfork")
_ENOSYS = ("clone3", "openat2")
# System calls newer than some libseccomp releases know by name; since Linux 5.1 (424) the
# numbers are the same on every architecture, x86_64 and aarch64 included.
_UNIFIED_NUMBERS = {
    "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435,
    "openat2": 437, "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442,
    "quotactl_fd": 443, "process_mrelease": 448, "fchmodat2": 452, "lsm_set_self_attr": 460,
    "setxattrat": 463, "removexattrat": 466, "open_tree_attr": 467, "file_setattr": 469,
}


def _build_bpf(allow_fork: bool) -> bytes:
    """The seccomp filter as raw BPF (struct sock_filter[]), built with pyseccomp."""
    import pyseccomp as sc

    flt = sc.SyscallFilter(defaction=sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    flt.set_attr(sc.Attr.CTL_NNP, 1)
    unified = platform.machine() in ("x86_64", "aarch64")

    def number(name: str) -> int | None:
        nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
        if nr < 0 and name in _UNIFIED_NUMBERS and unified:
            nr = _UNIFIED_NUMBERS[name]
        if nr == -1:
            return None       # unknown here (__NR_SCMP_ERROR)
        return nr             # >= 0, or a libseccomp pseudo number for a call this arch lacks

    def rule(action: int, name: str, *args) -> None:
        nr = number(name)
        if nr is None:
            return
        try:
            flt.add_rule(action, nr, *args)
        except OSError:
            if nr >= 0:
                raise         # a real system call that could not be filtered: fail loudly

    eperm, enosys = sc.ERRNO(errno.EPERM), sc.ERRNO(errno.ENOSYS)
    for name in _DENIED + (() if allow_fork else _PROCESS_CREATION):
        rule(eperm, name)
    for name in _ENOSYS:
        rule(enosys, name)
    if not allow_fork:
        rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    for flag in _CLONE_NEW:
        rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for flag in _WRITE_FLAGS:
        rule(eperm, "open", sc.Arg(1, sc.MASKED_EQ, flag, flag))
        rule(eperm, "openat", sc.Arg(2, sc.MASKED_EQ, flag, flag))
    rule(eperm, "prlimit64", sc.Arg(2, sc.NE, 0))

    fd = os.memfd_create("glia-evo-seccomp", os.MFD_CLOEXEC)
    try:
        class _File:
            def fileno(self):
                return fd
        flt.export_bpf(_File())
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if not data or len(data) % 8 or len(data) // 8 > 4096:
        raise KernelLayerError(f"libseccomp produced an unusable filter ({len(data)} bytes)")
    return data


def seccomp_filter(allow_fork: bool = False) -> bytes:
    """The filter for `allow_fork`, built once per process (raises if it cannot be built)."""
    global _BPF_ERROR
    with _lock:
        if allow_fork not in _BPF:
            try:
                _BPF[allow_fork] = _build_bpf(allow_fork)
            except Exception as exc:
                _BPF_ERROR = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                raise
        return _BPF[allow_fork]


class _Program:
    """A filter ready for prctl: the buffer and the sock_fprog pointing at it, made once in the
    parent (the child only makes the call)."""

    def __init__(self, bpf: bytes):
        self.buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self.prog = _SockFprog(len(bpf) // 8, ctypes.cast(self.buffer, ctypes.c_void_p))
        self.address = ctypes.addressof(self.prog)


def _seccomp_load(program: "_Program | bytes") -> None:
    if not isinstance(program, _Program):
        program = _Program(program)
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, program.address, 0, 0) != 0:
        raise KernelLayerError(_errno_text("prctl(PR_SET_SECCOMP)"))


def _no_new_privs() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise KernelLayerError(_errno_text("prctl(PR_SET_NO_NEW_PRIVS)"))
    if _libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        raise KernelLayerError("prctl(PR_SET_NO_NEW_PRIVS) did not take effect")


# --- probe and contain ----------------------------------------------------------------------------
def _probe_child(write_fd: int, bpf: bytes | None) -> None:
    """In the throwaway child: try each layer for real, report what worked as JSON."""
    report: dict = {"available": [], "reasons": [], "abi": 0}
    try:
        _no_new_privs()
        report["available"].append("no_new_privs")
    except Exception as exc:
        report["reasons"].append(f"no_new_privs: {exc}")
    try:
        abi = landlock_abi()
        report["abi"] = abi
        if abi < 1:
            raise KernelLayerError("Landlock is not enabled in this kernel"
                                   if _landlock_numbers() else
                                   f"Landlock is not supported on {platform.machine()}")
        _landlock_restrict(abi, ["/dev/null"])
        try:
            os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
            raise KernelLayerError("the Landlock domain did not restrict reading")
        except PermissionError:
            pass
        report["available"].append("landlock")
    except Exception as exc:
        report["reasons"].append(f"landlock: {exc}")
    try:
        if bpf is None:
            raise KernelLayerError(_BPF_ERROR or "no filter")
        if "no_new_privs" not in report["available"]:
            raise KernelLayerError("needs no_new_privs")
        _seccomp_load(bpf)
        try:
            os.close(os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC))
            raise KernelLayerError("the filter did not deny opening a file for writing")
        except PermissionError as exc:
            if exc.errno != errno.EPERM:
                raise KernelLayerError(f"unexpected error: {exc}") from None
        report["available"].append("seccomp")
    except Exception as exc:
        report["reasons"].append(f"seccomp: {exc}")
    os.write(write_fd, json.dumps(report).encode())


def probe() -> KernelSupport:
    """Which layers this kernel accepts, tried in a forked throwaway child (cached)."""
    global _PROBE
    if _PROBE is not None:
        return _PROBE
    try:
        bpf = seccomp_filter(False)
    except Exception:
        bpf = None
    with _lock:
        if _PROBE is not None:
            return _PROBE
        _PROBE = _run_probe(bpf)
        return _PROBE


def _run_probe(bpf: bytes | None) -> KernelSupport:
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        return KernelSupport((), LAYERS, f"could not fork a probe process: {exc}")
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            _probe_child(write_fd, bpf)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    data = b""
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
        try:
            os.kill(pid, 9)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
    try:
        report = json.loads(data)
        available = tuple(x for x in LAYERS if x in report["available"])
        reasons = [str(r) for r in report["reasons"]]
        abi = int(report["abi"])
    except Exception:
        return KernelSupport((), LAYERS, "the probe process did not report")
    missing = tuple(x for x in LAYERS if x not in available)
    reason = ("; ".join(reasons) if reasons else
              f"all kernel layers available (Landlock ABI {abi})")
    return KernelSupport(available, missing, " ".join(reason.split()), abi)


@dataclass(frozen=True)
class Plan:
    """What `contain()` installs, computed in the parent before it forks (see `plan`)."""

    support: KernelSupport
    bpf: bytes | None
    paths: tuple[str, ...]
    program: object = field(default=None, compare=False, repr=False)   # _Program of bpf

    def __post_init__(self):
        if self.bpf is not None and self.program is None:
            object.__setattr__(self, "program", _Program(self.bpf))


_PLANS: dict = {}


def plan(extra_read_paths: Iterable[str] = (), *, allow_fork: bool = False) -> Plan:
    """Probe, build the filter and list the readable paths, in this (parent) process.

    Cached until sys.modules, sys.path or the current directory change; cheap to call before
    every fork. Walking the modules in a freshly forked child would cost it milliseconds of
    copy-on-write page faults, so the pool calls this in the parent and hands the plan over."""
    support = probe()
    extra = tuple(str(p) for p in extra_read_paths)
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    key = (allow_fork, extra, len(sys.modules), tuple(p for p in sys.path if isinstance(p, str)),
           cwd)
    cached = _PLANS.get(key)
    if cached is not None:
        return cached
    bpf = seccomp_filter(allow_fork) if "seccomp" in support.available else None
    paths = tuple(read_paths(extra)) if "landlock" in support.available else ()
    result = Plan(support, bpf, paths)
    with _lock:
        if len(_PLANS) > 16:
            _PLANS.clear()
        _PLANS[key] = result
    return result


def contain(extra_read_paths: Iterable[str] = (), *, allow_fork: bool = False,
            prepared: Plan | None = None) -> KernelSupport:
    """Install every available layer in this process, for good (see the module docstring), after
    scrubbing the environment. Returns what was installed.

    Call it in a single-threaded process (a fresh fork): the layers bind the calling thread and
    the threads it starts later. `prepared`: a `plan()` made in the parent (then
    `extra_read_paths` and `allow_fork` are the plan's). Raises KernelLayerError when an
    available layer cannot be installed."""
    fields = _self_stat()
    if int(fields[17]) != 1:
        raise KernelLayerError(f"contain() needs a single-threaded process "
                               f"({fields[17].decode()} threads)")
    scrub_environment(fields)
    if prepared is None:
        prepared = plan(extra_read_paths, allow_fork=allow_fork)
    support = prepared.support
    if "no_new_privs" in support.available:
        _no_new_privs()
    if "landlock" in support.available:
        _landlock_restrict(support.landlock_abi, prepared.paths)
    if "seccomp" in support.available:
        if prepared.bpf is None:
            raise KernelLayerError("the seccomp filter is missing from the plan")
        _seccomp_load(prepared.program)
    return support
