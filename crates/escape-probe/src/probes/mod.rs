//! The probes, in the order they run. The ones that look at the host pid come first, while the
//! sandbox's own pids are still few (a host pid that collides with a sandbox pid is reported as an
//! error, never as contained).

mod control;
mod fs;
mod kernel;
mod net;
mod ns;
mod proc;
mod syscalls;

use crate::Probe;

macro_rules! p {
    ($name:literal, $cat:literal, $f:path) => {
        Probe { name: $name, category: $cat, run: $f }
    };
}

pub fn all() -> Vec<Probe> {
    vec![
        // The host process given by --host-pid.
        p!("host_pid_invisible", "pid", proc::host_pid_invisible),
        p!("kill_host", "ptrace", proc::kill_host),
        p!("ptrace_host", "ptrace", proc::ptrace_host),
        p!("process_vm_readv_host", "ptrace", proc::process_vm_readv_host),
        p!("pidfd_open_host", "setns", proc::pidfd_open_host),
        p!("setns_host_ns", "setns", proc::setns_host_ns),
        p!("setns_own_ns", "setns", proc::setns_own_ns),
        // The sandbox's own init (pid 1 inside), which talks to the helper outside.
        p!("proc1_is_init", "pid", proc::proc1_is_init),
        p!("ptrace_init", "init", proc::ptrace_init),
        p!("pidfd_getfd_init", "init", proc::pidfd_getfd_init),
        p!("init_fds", "init", proc::init_fds),
        p!("helper_exe_write", "init", proc::helper_exe_write),
        // Environment.
        p!("host_env", "env", proc::host_env),
        p!("proc1_environ", "env", proc::proc1_environ),
        p!("proc_environ_scan", "env", proc::proc_environ_scan),
        // The filesystem view.
        p!("chroot_dotdot", "chroot", fs::chroot_dotdot),
        p!("chroot_fchdir", "chroot", fs::chroot_fchdir),
        p!("proc_pid_roots", "chroot", fs::proc_pid_roots),
        p!("oldroot_mountinfo", "oldroot", fs::oldroot_mountinfo),
        p!("oldroot_dirs", "oldroot", fs::oldroot_dirs),
        p!("fds_leaked", "fd", fs::fds_leaked),
        p!("cwd_inside", "fd", fs::cwd_inside),
        p!("open_by_handle_at", "handle", fs::open_by_handle_at),
        p!("host_marker_invisible", "hostfs", fs::host_marker_invisible),
        p!("host_shm_invisible", "hostfs", fs::host_shm_invisible),
        p!("host_secret_files", "hostfs", fs::host_secret_files),
        p!("host_private_dirs", "hostfs", fs::host_private_dirs),
        p!("mount_tmpfs", "mount", fs::mount_tmpfs),
        p!("mount_remount_root_rw", "mount", fs::mount_remount_root_rw),
        p!("mount_bind", "mount", fs::mount_bind),
        p!("mount_new_api", "mount", fs::mount_new_api),
        p!("mount_setattr_rw", "mount", fs::mount_setattr_rw),
        p!("umount_masks", "mount", fs::umount_masks),
        p!("mknod_char", "mknod", fs::mknod_char),
        p!("block_devices", "devices", fs::block_devices),
        p!("dangerous_dev_nodes", "devices", fs::dangerous_dev_nodes),
        p!("device_node_in_bind", "devices", fs::device_node_in_bind),
        // Kernel knobs and memory.
        p!("sysrq_trigger", "kernel-write", kernel::sysrq_trigger),
        p!("core_pattern", "kernel-write", kernel::core_pattern),
        p!("modprobe_path", "kernel-write", kernel::modprobe_path),
        p!("uevent_helper", "kernel-write", kernel::uevent_helper),
        p!("drop_caches", "kernel-write", kernel::drop_caches),
        p!("binfmt_misc", "kernel-write", kernel::binfmt_misc),
        p!("proc_kcore", "kernel-read", kernel::proc_kcore),
        p!("dev_mem", "kernel-read", kernel::dev_mem),
        p!("dev_port", "kernel-read", kernel::dev_port),
        p!("dev_kmsg", "kernel-read", kernel::dev_kmsg),
        p!("proc_kmsg", "kernel-read", kernel::proc_kmsg),
        p!("kallsyms", "kernel-read", kernel::kallsyms),
        p!("syslog", "kernel-read", kernel::syslog),
        p!("cgroup_mount", "cgroup", kernel::cgroup_mount),
        p!("cgroup_writable", "cgroup", kernel::cgroup_writable),
        p!("init_module", "module", kernel::init_module),
        p!("finit_module", "module", kernel::finit_module),
        p!("delete_module", "module", kernel::delete_module),
        p!("kexec_load", "kexec", kernel::kexec_load),
        p!("kexec_file_load", "kexec", kernel::kexec_file_load),
        p!("reboot", "kernel", kernel::reboot),
        p!("ioport", "kernel", kernel::ioport),
        p!("swapon", "kernel", kernel::swapon),
        p!("acct", "kernel", kernel::acct),
        // New namespaces.
        p!("unshare_user", "userns", ns::unshare_user),
        p!("clone_newuser", "userns", ns::clone_newuser),
        p!("clone3_newuser", "userns", ns::clone3_newuser),
        p!("unshare_user_combined", "userns", ns::unshare_user_combined),
        p!("unshare_other_ns", "userns", ns::unshare_other_ns),
        // Privilege.
        p!("caps_zero", "caps", syscalls::caps_zero),
        p!("capset_raise", "caps", syscalls::capset_raise),
        p!("caps_after_exec", "caps", syscalls::caps_after_exec),
        p!("no_new_privs", "nnp", syscalls::no_new_privs),
        p!("setuid_fixture", "nnp", syscalls::setuid_fixture),
        p!("keyring_add_key", "keyring", syscalls::keyring_add_key),
        p!("keyctl_user_keyring", "keyring", syscalls::keyctl_user_keyring),
        p!("keyring_session_shared", "keyring", syscalls::keyring_session_shared),
        // Syscall surface.
        p!("i386_int80_getpid", "abi", syscalls::i386_int80_getpid),
        p!("i386_int80_unshare", "abi", syscalls::i386_int80_unshare),
        p!("x32_getpid", "abi", syscalls::x32_getpid),
        p!("clone3", "syscall", syscalls::clone3),
        p!("io_uring_setup", "syscall", syscalls::io_uring_setup),
        p!("userfaultfd", "syscall", syscalls::userfaultfd),
        p!("bpf", "syscall", syscalls::bpf),
        p!("perf_event_open", "syscall", syscalls::perf_event_open),
        p!("personality_read_implies_exec", "syscall", syscalls::personality_read_implies_exec),
        p!("personality_addr_no_randomize", "syscall", syscalls::personality_addr_no_randomize),
        p!("realtime_sched", "syscall", syscalls::realtime_sched),
        // Terminals.
        p!("tiocsti", "tty", net::tiocsti),
        p!("tiocsti_high_bits", "tty", net::tiocsti_high_bits),
        p!("ctty_none", "tty", net::ctty_none),
        // Network.
        p!("af_vsock", "socket", net::af_vsock),
        p!("af_packet", "socket", net::af_packet),
        p!("af_key", "socket", net::af_key),
        p!("af_alg", "socket", net::af_alg),
        p!("af_bluetooth", "socket", net::af_bluetooth),
        p!("af_inet_raw", "socket", net::af_inet_raw),
        p!("abstract_unix_host", "socket", net::abstract_unix_host),
        p!("host_unix_sockets", "socket", net::host_unix_sockets),
        p!("net_interfaces", "net", net::net_interfaces),
        p!("sethostname", "uts", net::sethostname),
        // Controls: ordinary work that must keep working.
        p!("fork_wait", "control", control::fork_wait),
        p!("thread", "control", control::thread),
        p!("socketpair", "control", control::socketpair),
        p!("unix_socket_path", "control", control::unix_socket_path),
        p!("abstract_unix_own", "control", control::abstract_unix_own),
        p!("tmp_files", "control", control::tmp_files),
        p!("tcp_loopback", "control", control::tcp_loopback),
        p!("netlink_socket", "control", control::netlink_socket),
        p!("os_release", "control", control::os_release),
        p!("mmap_mprotect", "control", control::mmap_mprotect),
        p!("exec_self", "control", control::exec_self),
        p!("dev_basic", "control", control::dev_basic),
        p!("pty_open", "control", control::pty_open),
        p!("pipe", "control", control::pipe),
        p!("memfd", "control", control::memfd),
        p!("getrandom", "control", control::getrandom),
    ]
}

/// Common judgement for "a syscall guarded by a capability/permission check": refused with one of
/// the errnos that check (or seccomp) returns is contained; a descriptor or any other errno means
/// the call got past the gate.
pub fn gate(what: &str, r: Result<i64, i32>, refused: &[i32]) -> crate::Res {
    use crate::sys::ename;
    match r {
        Ok(v) => crate::escaped!("{what} succeeded ({v})"),
        Err(e) if refused.contains(&e) => crate::contained!("{what}: {}", ename(e)),
        Err(e) if crate::sys::is_resource_error(e) => crate::error!("{what}: {} (out of resources, undecided)", ename(e)),
        Err(e) => crate::escaped!("{what}: {} (past the permission check)", ename(e)),
    }
}

/// The errnos a refused privileged call returns (capability check, LSM, seccomp errno).
pub const REFUSED: &[i32] = &[libc::EPERM, libc::EACCES, libc::ENOSYS];
