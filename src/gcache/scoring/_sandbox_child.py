"""The sandbox launcher: confines itself, then forks the model-written program and reports how it ended.

Run by :func:`gcache.scoring.execution.run_program` as ``python -I _sandbox_child.py CONFIG_JSON`` in the program's
scratch folder. It must not import gcache (``-I`` ignores ``PYTHONPATH``): standard library and ``ctypes`` only.

In order, each step recorded as ``on: ...``, ``partial: ...`` or ``off: <reason>`` in the report the program's
process writes to the status pipe before it execs:

1. namespaces: a network namespace (no interface is up, so nothing outside can be reached), a PID namespace
   (the program is its init: when it ends, or the launcher dies, every process it started is killed) and a mount
   namespace. As root they are created directly; otherwise inside a new user namespace, which also makes the
   process limit count only the sandbox's processes;
2. mounts (in the launcher, private to the sandbox): the scratch folder becomes a size-capped tmpfs holding a
   copy of the program, so the program cannot fill the host's disk and whatever it leaves (5,000 nested folders)
   vanishes with the namespace;
3. fork; in the program's process (pid 1 of the new PID namespace): a fresh ``/proc`` showing only the sandbox's
   processes (the host's command lines, API keys among them, are out of sight);
4. as root: switch to a throwaway user id, so that the process limit applies (the kernel never limits root's
   processes) and the program cannot signal or ptrace other users' processes. It keeps one capability,
   ``CAP_DAC_READ_SEARCH`` (read any file), so the interpreter stays readable wherever it lives; step 6 narrows
   what can be read;
5. resource limits: CPU seconds, address space, processes, file size, open files, no core dumps;
6. Landlock (Linux >= 5.13): writes only inside the scratch folder; reads only in the scratch folder, the
   interpreter's installation and the system library folders (``/proc`` only when it is the private one); no TCP
   bind/connect (ABI >= 4); no signals or abstract unix sockets out of the sandbox (ABI >= 6);
7. seccomp: no ``AF_UNIX`` socket can be created (a pathname socket of the host is the one way out that neither
   the network namespace nor Landlock closes) and no io_uring (whose requests seccomp cannot see);
8. exec ``python -I -c BOOTSTRAP program.py``: the bootstrap reads a random token from a pipe, runs the program,
   and writes the token to a second pipe only when the program ran to its last line. The launcher reports the
   exit status, the CPU time and whether the token came back: exit status 0 alone never counts as passed.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import resource
import secrets
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
CAP_DAC_READ_SEARCH = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Landlock: the syscall numbers are the same on every architecture (asm-generic table).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE = 1 << 12, 1 << 13, 1 << 14
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE  # the rights a rule on a file may hold

# Read-only for the program, beyond its scratch folder and the interpreter's own installation.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/dev")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group")

libc = ctypes.CDLL(None, use_errno=True)


def _errno_text() -> str:
    err = ctypes.get_errno()
    return f"{os.strerror(err)} (errno {err})"


def _syscall(number: int, *args) -> int:
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(number, *args)


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> bool:
    return libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0


# ----------------------------------------------------------------------------------------------- namespaces


def enter_namespaces(root: bool, report: dict) -> bool:
    """Unshare network, PID and mount namespaces; returns whether the mount namespace exists."""
    flags = CLONE_NEWNET | CLONE_NEWPID
    uid, gid = os.getuid(), os.getgid()
    how = "created as root" if root else "inside a new user namespace"
    if not root:
        flags |= CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        reason = f"off: unshare failed: {_errno_text()}"
        report["network"] = reason
        report["pid_namespace"] = reason
        report["mounts"] = reason
        return False
    if not root:
        try:  # keep our own ids inside; no supplementary groups can be set (what unprivileged maps require)
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        except OSError as err:
            report["user_namespace_map"] = f"off: {err}"
    report["network"] = f"on: network namespace ({how}); no interface is up"
    report["pid_namespace"] = f"on: PID namespace ({how}); its processes die with the program"
    # Separately: a kernel that refuses a mount namespace must not cost the network and PID ones.
    if libc.unshare(CLONE_NEWNS) != 0:
        report["mounts"] = f"off: no mount namespace: {_errno_text()}"
        return False
    # Private propagation first: without it the mounts below would appear on the host.
    if libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        report["mounts"] = f"off: cannot make the mount namespace private: {_errno_text()}"
        return False
    report["mounts"] = f"on: private mount namespace ({how})"
    return True


def mount_scratch(scratch: str, program: str, size_mb: int, uid: int | None, report: dict) -> bool:
    """Mount a ``size_mb`` tmpfs on the scratch folder and write the program into it; returns whether it worked."""
    owner = f",uid={uid},gid={uid}" if uid is not None else f",uid={os.getuid()},gid={os.getgid()}"
    options = f"size={size_mb}m,nr_inodes={max(1024, size_mb * 256)},mode=0700{owner}".encode()
    if libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV), options) != 0:
        report["scratch_size"] = (f"off: tmpfs mount failed ({_errno_text()}): only each file's size is capped, "
                                  "and what the program leaves must be deleted from the host's disk")
        return False
    os.chdir(scratch)  # the launcher's working directory was the folder under the mount
    path = os.path.join(scratch, "program.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(program)
    if uid is not None:
        os.chown(path, uid, uid)
    report["scratch_size"] = (f"on: the scratch folder is a private tmpfs of {size_mb} MiB; it vanishes with the "
                              "sandbox")
    return True


def mount_proc(report: dict) -> bool:
    """In pid 1 of the new PID namespace: a fresh /proc, which lists only the sandbox's processes."""
    if libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None) != 0:
        report["proc"] = f"on: no /proc at all (a private one could not be mounted: {_errno_text()})"
        return False
    report["proc"] = "on: private /proc: only the sandbox's own processes are visible"
    return True


# ----------------------------------------------------------------------------------------------- identity


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_root(uid: int, report: dict) -> None:
    """setuid/setgid to ``uid`` keeping only CAP_DAC_READ_SEARCH (effective, inheritable and ambient)."""
    try:
        if not _prctl(PR_SET_KEEPCAPS, 1):
            raise OSError(f"prctl(PR_SET_KEEPCAPS): {_errno_text()}")
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
        keep = 1 << CAP_DAC_READ_SEARCH
        data = (_CapData * 2)(_CapData(keep, keep, keep), _CapData(0, 0, 0))
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(f"capset: {_errno_text()}")
        if not _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH):
            raise OSError(f"prctl(PR_CAP_AMBIENT_RAISE): {_errno_text()}")
        _prctl(PR_SET_KEEPCAPS, 0)
    except OSError as err:
        report["identity"] = f"off: could not leave root ({err})"
        return
    report["identity"] = (f"on: runs as throwaway uid {uid} instead of root (keeps only CAP_DAC_READ_SEARCH, to "
                          "read the interpreter; Landlock limits what it reads)")


# ----------------------------------------------------------------------------------------------- limits


def processes_of(uid: int) -> int:
    """How many processes ``uid`` runs now (what RLIMIT_NPROC counts when no user namespace separates them)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                continue  # ended meanwhile
    return count


def set_limits(limits: dict, counted_where: str, report: dict, already: int = 0) -> None:
    """Apply the resource limits; ``already`` processes of the same user count against the process limit too."""
    cpu = max(1, math.ceil(limits["cpu_s"]))
    memory = limits["memory_mb"] * 2**20
    file_size = limits["max_file_mb"] * 2**20
    wanted = [
        ("cpu_time", resource.RLIMIT_CPU, (cpu, cpu + 1), f"{cpu} s of CPU"),
        ("memory", resource.RLIMIT_AS, (memory, memory), f"{limits['memory_mb']} MiB of address space"),
        ("processes", resource.RLIMIT_NPROC, (already + limits["max_processes"], already + limits["max_processes"]),
         f"{limits['max_processes']} processes ({counted_where})"),
        ("file_size", resource.RLIMIT_FSIZE, (file_size, file_size), f"files of at most {limits['max_file_mb']} MiB"),
        ("open_files", resource.RLIMIT_NOFILE, (limits["max_open_files"], limits["max_open_files"]),
         f"{limits['max_open_files']} open files"),
        ("core_dumps", resource.RLIMIT_CORE, (0, 0), "none"),
    ]
    for name, which, value, detail in wanted:
        try:
            resource.setrlimit(which, value)
            report[name] = f"on: {detail}"
        except (ValueError, OSError) as err:
            report[name] = f"off: setrlimit failed ({err})"


# ----------------------------------------------------------------------------------------------- landlock


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock_abi() -> int:
    abi = _syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return abi if abi > 0 else 0


def _add_path_rule(ruleset: int, path: str, access: int) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False  # a folder this system does not have
    try:
        if not os.path.isdir(path):
            access &= FILE_RIGHTS
        rule = _PathBeneathAttr(access, fd)
        return _syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) == 0
    finally:
        os.close(fd)


def apply_landlock(scratch: str, read_roots: list[str], report: dict) -> None:
    abi = _landlock_abi()
    if abi < 1:
        reason = f"off: Landlock is not available in this kernel ({_errno_text()})"
        report["filesystem"] = (f"{reason}: reads and writes follow file permissions only"
                                + (" (the throwaway uid can read every file)"
                                   if report.get("identity", "").startswith("on: runs as throwaway") else ""))
        report["tcp"] = reason
        return
    read = FS_READ_FILE | FS_READ_DIR
    write = (FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_CHAR | FS_MAKE_DIR | FS_MAKE_REG
             | FS_MAKE_SOCK | FS_MAKE_FIFO | FS_MAKE_BLOCK | FS_MAKE_SYM)
    if abi >= 2:
        write |= FS_REFER
    if abi >= 3:
        write |= FS_TRUNCATE
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(read | write, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # older kernels know only the leading fields
    ruleset = _syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        report["filesystem"] = f"off: landlock_create_ruleset failed: {_errno_text()}"
        report["tcp"] = report["filesystem"]
        return
    try:
        if not _add_path_rule(ruleset, scratch, read | write):
            raise OSError(f"cannot add the scratch folder rule: {_errno_text()}")
        for path in (*read_roots, *SYSTEM_DIRS, *SYSTEM_FILES):
            _add_path_rule(ruleset, path, read)
        _add_path_rule(ruleset, "/dev/null", FS_READ_FILE | FS_WRITE_FILE)
        if not _prctl(PR_SET_NO_NEW_PRIVS, 1):
            raise OSError(f"prctl(PR_SET_NO_NEW_PRIVS): {_errno_text()}")
        if _syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(f"landlock_restrict_self: {_errno_text()}")
    except OSError as err:
        report["filesystem"] = f"off: {err}"
        report["tcp"] = report["filesystem"]
        return
    finally:
        os.close(ruleset)
    report["filesystem"] = (f"on: Landlock ABI {abi}: writes only in the scratch folder; reads only there, in the "
                            "interpreter's installation and in system library folders")
    report["tcp"] = (f"on: Landlock ABI {abi}: no TCP bind or connect" if net else
                     f"off: Landlock ABI {abi} < 4 cannot filter TCP")
    report["scope"] = (f"on: Landlock ABI {abi}: no signals or abstract unix sockets out of the sandbox" if scoped
                       else f"off: Landlock ABI {abi} < 6 cannot scope signals")


# ----------------------------------------------------------------------------------------------- seccomp


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


# (audit arch, socket, io_uring_setup) per machine.
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}
_LD, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_ALLOW, _EPERM = 0x7FFF0000, 0x00050000 | 1
AF_UNIX = 1


def apply_seccomp(report: dict) -> bool:
    """Refuse socket(AF_UNIX, ...) and io_uring_setup with EPERM; socketpair stays (it reaches nothing)."""
    machine = platform.machine()
    if machine not in _SECCOMP_ARCH:
        report["unix_sockets"] = f"off: no seccomp filter for {machine}: host UNIX sockets can be connected to"
        return False
    arch, nr_socket, nr_io_uring = _SECCOMP_ARCH[machine]
    # Jump offsets count from the next instruction; index 8 allows, 9 refuses.
    program = [
        (_LD, 0, 0, 4),              # 0: arch
        (_JEQ, 0, 7, arch),          # 1: another ABI (i386 compat): refuse everything
        (_LD, 0, 0, 0),              # 2: syscall number
        (_JGE, 5, 0, 0x40000000),    # 3: x32 numbers: refuse
        (_JEQ, 4, 0, nr_io_uring),   # 4
        (_JEQ, 0, 2, nr_socket),     # 5
        (_LD, 0, 0, 16),             # 6: low half of args[0], the address family
        (_JEQ, 1, 0, AF_UNIX),       # 7
        (_RET, 0, 0, _ALLOW),        # 8
        (_RET, 0, 0, _EPERM),        # 9
    ]
    filters = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    prog = _SockFprog(len(program), filters)
    if not _prctl(PR_SET_NO_NEW_PRIVS, 1) or libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER),
                                                         ctypes.byref(prog), ctypes.c_ulong(0),
                                                         ctypes.c_ulong(0)) != 0:
        report["unix_sockets"] = f"off: seccomp failed ({_errno_text()}): host UNIX sockets can be connected to"
        return False
    report["unix_sockets"] = "on: seccomp: no AF_UNIX socket can be created (socketpair allowed), no io_uring"
    return True


# ----------------------------------------------------------------------------------------------- main

# Runs the program as __main__ and hands back the token only when its last line has run: an exit (sys.exit(0),
# os._exit(0)) or an exception before the end leaves the pipe without it. The token never touches a file, argv
# or the environment; it lives only in this frame's memory.
BOOTSTRAP = """
import os, runpy, sys
def _gcache_bootstrap(path, token_fd, done_fd):
    token = os.read(token_fd, 256)
    os.close(token_fd)
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")
    os.write(done_fd, token)
_gcache_bootstrap(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


def run_child(cfg: dict, report: dict, root: bool, private_mounts: bool, status_fd: int, token_r: int,
              done_w: int) -> None:
    """The program's process: confine, report, exec. Never returns."""
    try:
        os.set_inheritable(status_fd, False)  # closed at exec: the program cannot forge the launcher's lines
        _prctl(PR_SET_PDEATHSIG, 9)  # SIGKILL: the launcher killed on timeout takes the program with it
        proc_private = mount_proc(report) if private_mounts else False
        if not private_mounts:
            report["proc"] = "on: no /proc at all (Landlock does not allow reading it)"
        if root and cfg.get("run_as_uid") is not None:
            drop_root(cfg["run_as_uid"], report)
            counted = "counted for the throwaway uid only"
        else:
            report["identity"] = "on: runs as the calling user (not root)" if not root else "off: runs as root"
            counted = ("counted inside the sandbox's user namespace" if report["network"].startswith("on")
                       else "beyond the processes this user already runs: no user namespace separates them")
        if root and not report["identity"].startswith("on"):
            counted = "not enforced: the kernel does not limit root's processes"
        set_limits(cfg["limits"], counted, report, cfg.get("already", 0))
        apply_landlock(cfg["scratch"], cfg["read_roots"] + (["/proc"] if proc_private else []), report)
        if not report["filesystem"].startswith("on") and not proc_private:
            report["proc"] = "off: the host's /proc is readable (its processes' command lines)"
        if not apply_seccomp(report) and report["network"].startswith("on"):
            report["network"] = report["network"].replace("on:", "partial:", 1) + (
                ", but UNIX sockets on the host can be connected to")
        os.write(status_fd, (json.dumps({"protections": report}) + "\n").encode())
        for fd in (token_r, done_w):
            os.set_inheritable(fd, True)
        os.execv(cfg["python"], [cfg["python"], "-I", "-c", BOOTSTRAP, "program.py", str(token_r), str(done_w)])
    finally:
        os._exit(127)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    report: dict[str, str] = {}
    root = os.geteuid() == 0
    private_mounts = enter_namespaces(root, report)
    with open(cfg["program_file"], encoding="utf-8") as f:
        program = f.read()
    uid = cfg.get("run_as_uid") if root else None
    if not (private_mounts and mount_scratch(cfg["scratch"], program, cfg["limits"]["max_scratch_mb"], uid, report)):
        if not private_mounts:  # otherwise mount_scratch said why
            report["scratch_size"] = ("off: no mount namespace: only each file's size is capped, and what the "
                                      "program leaves must be deleted from the host's disk")
        path = os.path.join(cfg["scratch"], "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        if uid is not None:
            os.chown(path, uid, uid)
    # Without a user namespace the kernel counts every process of this uid: allow the ones already running.
    cfg["already"] = 0 if root or report["network"].startswith("on") else processes_of(os.getuid())
    token = secrets.token_hex(32).encode()
    token_r, token_w = os.pipe()
    done_r, done_w = os.pipe()
    os.write(token_w, token)
    os.close(token_w)
    pid = os.fork()
    if pid == 0:
        os.close(done_r)
        run_child(cfg, report, root, private_mounts, status_fd, token_r, done_w)
    os.close(token_r)
    os.close(done_w)
    _, status, usage = os.wait4(pid, 0)
    returncode = os.waitstatus_to_exitcode(status)
    # Orphans of the program keep the pipe open only until the PID namespace dies with it: read what is there.
    os.set_blocking(done_r, False)
    done = b""
    while True:
        try:
            chunk = os.read(done_r, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        done += chunk
    os.write(status_fd, (json.dumps({"returncode": returncode, "completed": token in done,
                                     "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
