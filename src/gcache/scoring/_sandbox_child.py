"""The sandbox launcher: confines itself, then forks the model-written program and reports how it ended.

Run by :func:`gcache.scoring.execution.run_program` as ``python -I _sandbox_child.py CONFIG_JSON`` in the program's
scratch folder. It must not import gcache (``-I`` ignores ``PYTHONPATH``): standard library and ``ctypes`` only.

In order, each step recorded as active or not (with the reason) in the report it writes to the status pipe:

1. namespaces: a network namespace (no interface is up, so nothing outside can be reached) and a PID namespace
   (the program is its init: when it ends, or the launcher dies, every process it started is killed). As root
   they are created directly; otherwise inside a new user namespace, which also makes the process limit count
   only the sandbox's processes;
2. as root: switch to a throwaway user id, so that the process limit applies (the kernel never limits root's
   processes) and the program cannot signal or ptrace other users' processes. It keeps one capability,
   ``CAP_DAC_READ_SEARCH`` (read any file), so the interpreter stays readable wherever it lives; step 4 narrows
   what can be read;
3. resource limits: CPU seconds, address space, processes, file size, open files, no core dumps;
4. Landlock (Linux >= 5.13): writes only inside the scratch folder; reads only in the scratch folder, the
   interpreter's installation and the system library folders; no TCP bind/connect (ABI >= 4); no signals or
   abstract unix sockets out of the sandbox (ABI >= 6);
5. fork; the child closes the status pipe, asks to be killed if the launcher dies, and execs
   ``python -I program.py``. The launcher waits and reports the exit status and CPU time.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000

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
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/dev", "/proc")
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


def enter_namespaces(root: bool, report: dict) -> None:
    flags = CLONE_NEWNET | CLONE_NEWPID
    uid, gid = os.getuid(), os.getgid()
    how = "created as root" if root else "inside a new user namespace"
    if not root:
        flags |= CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        reason = f"off: unshare failed: {_errno_text()}"
        report["network"] = reason
        report["pid_namespace"] = reason
        return
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


# ----------------------------------------------------------------------------------------------- main


def main() -> int:
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    report: dict[str, str] = {}
    root = os.geteuid() == 0
    enter_namespaces(root, report)
    if root and cfg.get("run_as_uid") is not None:
        drop_root(cfg["run_as_uid"], report)
        counted = "counted for the throwaway uid only"
    else:
        report["identity"] = "on: runs as the calling user (not root)" if not root else "off: runs as root"
        counted = ("counted inside the sandbox's user namespace" if report["network"].startswith("on")
                   else "beyond the processes this user already runs: no user namespace separates them")
    if root and not report["identity"].startswith("on"):
        counted = "not enforced: the kernel does not limit root's processes"
    # Without a user namespace the kernel counts every process of this uid: allow the ones already running.
    already = 0 if root or report["network"].startswith("on") else processes_of(os.getuid())
    set_limits(cfg["limits"], counted, report, already)
    apply_landlock(cfg["scratch"], cfg["read_roots"], report)
    os.write(status_fd, (json.dumps({"protections": report}) + "\n").encode())

    pid = os.fork()
    if pid == 0:  # the program: init of the PID namespace when there is one
        try:
            os.close(status_fd)
            _prctl(PR_SET_PDEATHSIG, 9)  # SIGKILL: the launcher killed on timeout takes the program with it
            os.execv(cfg["python"], [cfg["python"], "-I", cfg["program"]])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    returncode = os.waitstatus_to_exitcode(status)
    os.write(status_fd, (json.dumps({"returncode": returncode,
                                     "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
