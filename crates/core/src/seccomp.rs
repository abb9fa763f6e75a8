//! Seccomp: the default profile and OCI/Docker JSON profiles compiled to classic BPF, and loading.
//!
//! Compile in the helper before any fork ([`default_program`], [`compile_oci`] allocate); [`load`]
//! allocates nothing and runs in the sandbox as the last step before execve, after no_new_privs
//! (DESIGN section 3), so the filter never has to allow the setup itself.
//!
//! Every filter emitted here has the same shape:
//!   1. `seccomp_data.arch` must be the native one, else KILL_PROCESS: no i386 `int 0x80` on
//!      x86_64, no arm32 compat on aarch64. On x86_64 a number with the x32 bit is killed too.
//!   2. The syscall number goes through a binary search over the number line, cut into segments
//!      that share one outcome. A leaf is a return, or a block that looks at arguments.
//!   3. The argument blocks, then one return instruction per distinct action.
//!
//! Only the blocks read arguments, so on kernels with the seccomp action cache (5.11+) every
//! syscall the filter allows whatever its arguments never runs the filter at all after install.

use crate::error::{SetupError, Step};
use libc::sock_filter;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Architecture

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("crate::seccomp knows the syscall table of x86_64 and aarch64 only");

/// `{ name, number }` for every `libc::SYS_*` constant named; the name keeps its `SYS_` prefix
/// (macro_rules cannot paste identifiers) and [`syscall_number`] strips it.
macro_rules! libc_syscalls {
    ($($sys:ident),* $(,)?) => {
        &[$((stringify!($sys), libc::$sys as u32)),*]
    };
}

/// Syscalls added to every architecture's table after the libc crate's list stopped growing
/// (the numbers from 424 up are shared by all architectures). A name libc also defines is taken
/// from libc.
const NEWER_SYSCALLS: &[(&str, u32)] = &[
    ("cachestat", 451),
    ("fchmodat2", 452),
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("statmount", 457),
    ("listmount", 458),
    ("lsm_get_self_attr", 459),
    ("lsm_set_self_attr", 460),
    ("lsm_list_modules", 461),
    ("mseal", 462),
    ("setxattrat", 463),
    ("getxattrat", 464),
    ("listxattrat", 465),
    ("removexattrat", 466),
    ("open_tree_attr", 467),
    ("file_getattr", 468),
    ("file_setattr", 469),
    ("listns", 470),
    ("rseq_slice_yield", 471),
];

#[cfg(target_arch = "x86_64")]
mod arch {
    /// EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    pub const AUDIT_ARCH: u32 = 0xC000_003E;
    /// x32 ABI syscalls arrive with the native arch value and this bit in the number.
    pub const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
    /// How Docker profiles (`includes.arches`) and libseccomp name this architecture.
    pub const NAMES: &[&str] = &["amd64", "x86_64", "SCMP_ARCH_X86_64"];

    /// Every syscall the libc crate defines for x86_64 in both its gnu and musl flavours.
    pub const LIBC: &[(&str, u32)] = libc_syscalls!(
        SYS__sysctl,
        SYS_accept,
        SYS_accept4,
        SYS_access,
        SYS_acct,
        SYS_add_key,
        SYS_adjtimex,
        SYS_afs_syscall,
        SYS_alarm,
        SYS_arch_prctl,
        SYS_bind,
        SYS_bpf,
        SYS_brk,
        SYS_capget,
        SYS_capset,
        SYS_chdir,
        SYS_chmod,
        SYS_chown,
        SYS_chroot,
        SYS_clock_adjtime,
        SYS_clock_getres,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_clock_settime,
        SYS_clone,
        SYS_clone3,
        SYS_close,
        SYS_close_range,
        SYS_connect,
        SYS_copy_file_range,
        SYS_creat,
        SYS_delete_module,
        SYS_dup,
        SYS_dup2,
        SYS_dup3,
        SYS_epoll_create,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_ctl_old,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        SYS_epoll_wait,
        SYS_epoll_wait_old,
        SYS_eventfd,
        SYS_eventfd2,
        SYS_execve,
        SYS_execveat,
        SYS_exit,
        SYS_exit_group,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_fadvise64,
        SYS_fallocate,
        SYS_fanotify_init,
        SYS_fanotify_mark,
        SYS_fchdir,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchmodat2,
        SYS_fchown,
        SYS_fchownat,
        SYS_fcntl,
        SYS_fdatasync,
        SYS_fgetxattr,
        SYS_finit_module,
        SYS_flistxattr,
        SYS_flock,
        SYS_fork,
        SYS_fremovexattr,
        SYS_fsconfig,
        SYS_fsetxattr,
        SYS_fsmount,
        SYS_fsopen,
        SYS_fspick,
        SYS_fstat,
        SYS_fstatfs,
        SYS_fsync,
        SYS_ftruncate,
        SYS_futex,
        SYS_futex_waitv,
        SYS_futimesat,
        SYS_get_mempolicy,
        SYS_get_robust_list,
        SYS_get_thread_area,
        SYS_getcpu,
        SYS_getcwd,
        SYS_getdents,
        SYS_getdents64,
        SYS_getegid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getgroups,
        SYS_getitimer,
        SYS_getpeername,
        SYS_getpgid,
        SYS_getpgrp,
        SYS_getpid,
        SYS_getpmsg,
        SYS_getppid,
        SYS_getpriority,
        SYS_getrandom,
        SYS_getresgid,
        SYS_getresuid,
        SYS_getrlimit,
        SYS_getrusage,
        SYS_getsid,
        SYS_getsockname,
        SYS_getsockopt,
        SYS_gettid,
        SYS_gettimeofday,
        SYS_getuid,
        SYS_getxattr,
        SYS_init_module,
        SYS_inotify_add_watch,
        SYS_inotify_init,
        SYS_inotify_init1,
        SYS_inotify_rm_watch,
        SYS_io_cancel,
        SYS_io_destroy,
        SYS_io_getevents,
        SYS_io_setup,
        SYS_io_submit,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_io_uring_setup,
        SYS_ioctl,
        SYS_ioperm,
        SYS_iopl,
        SYS_ioprio_get,
        SYS_ioprio_set,
        SYS_kcmp,
        SYS_kexec_file_load,
        SYS_kexec_load,
        SYS_keyctl,
        SYS_kill,
        SYS_landlock_add_rule,
        SYS_landlock_create_ruleset,
        SYS_landlock_restrict_self,
        SYS_lchown,
        SYS_lgetxattr,
        SYS_link,
        SYS_linkat,
        SYS_listen,
        SYS_listxattr,
        SYS_llistxattr,
        SYS_lookup_dcookie,
        SYS_lremovexattr,
        SYS_lseek,
        SYS_lsetxattr,
        SYS_lstat,
        SYS_madvise,
        SYS_mbind,
        SYS_membarrier,
        SYS_memfd_create,
        SYS_memfd_secret,
        SYS_migrate_pages,
        SYS_mincore,
        SYS_mkdir,
        SYS_mkdirat,
        SYS_mknod,
        SYS_mknodat,
        SYS_mlock,
        SYS_mlock2,
        SYS_mlockall,
        SYS_mmap,
        SYS_modify_ldt,
        SYS_mount,
        SYS_mount_setattr,
        SYS_move_mount,
        SYS_move_pages,
        SYS_mprotect,
        SYS_mq_getsetattr,
        SYS_mq_notify,
        SYS_mq_open,
        SYS_mq_timedreceive,
        SYS_mq_timedsend,
        SYS_mq_unlink,
        SYS_mremap,
        SYS_mseal,
        SYS_msgctl,
        SYS_msgget,
        SYS_msgrcv,
        SYS_msgsnd,
        SYS_msync,
        SYS_munlock,
        SYS_munlockall,
        SYS_munmap,
        SYS_name_to_handle_at,
        SYS_nanosleep,
        SYS_newfstatat,
        SYS_nfsservctl,
        SYS_open,
        SYS_open_by_handle_at,
        SYS_open_tree,
        SYS_openat,
        SYS_openat2,
        SYS_pause,
        SYS_perf_event_open,
        SYS_personality,
        SYS_pidfd_getfd,
        SYS_pidfd_open,
        SYS_pidfd_send_signal,
        SYS_pipe,
        SYS_pipe2,
        SYS_pivot_root,
        SYS_pkey_alloc,
        SYS_pkey_free,
        SYS_pkey_mprotect,
        SYS_poll,
        SYS_ppoll,
        SYS_prctl,
        SYS_pread64,
        SYS_preadv,
        SYS_preadv2,
        SYS_prlimit64,
        SYS_process_madvise,
        SYS_process_mrelease,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pselect6,
        SYS_ptrace,
        SYS_putpmsg,
        SYS_pwrite64,
        SYS_pwritev,
        SYS_pwritev2,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_read,
        SYS_readahead,
        SYS_readlink,
        SYS_readlinkat,
        SYS_readv,
        SYS_reboot,
        SYS_recvfrom,
        SYS_recvmmsg,
        SYS_recvmsg,
        SYS_remap_file_pages,
        SYS_removexattr,
        SYS_rename,
        SYS_renameat,
        SYS_renameat2,
        SYS_request_key,
        SYS_restart_syscall,
        SYS_rmdir,
        SYS_rseq,
        SYS_rt_sigaction,
        SYS_rt_sigpending,
        SYS_rt_sigprocmask,
        SYS_rt_sigqueueinfo,
        SYS_rt_sigreturn,
        SYS_rt_sigsuspend,
        SYS_rt_sigtimedwait,
        SYS_rt_tgsigqueueinfo,
        SYS_sched_get_priority_max,
        SYS_sched_get_priority_min,
        SYS_sched_getaffinity,
        SYS_sched_getattr,
        SYS_sched_getparam,
        SYS_sched_getscheduler,
        SYS_sched_rr_get_interval,
        SYS_sched_setaffinity,
        SYS_sched_setattr,
        SYS_sched_setparam,
        SYS_sched_setscheduler,
        SYS_sched_yield,
        SYS_seccomp,
        SYS_security,
        SYS_select,
        SYS_semctl,
        SYS_semget,
        SYS_semop,
        SYS_semtimedop,
        SYS_sendfile,
        SYS_sendmmsg,
        SYS_sendmsg,
        SYS_sendto,
        SYS_set_mempolicy,
        SYS_set_mempolicy_home_node,
        SYS_set_robust_list,
        SYS_set_thread_area,
        SYS_set_tid_address,
        SYS_setdomainname,
        SYS_setfsgid,
        SYS_setfsuid,
        SYS_setgid,
        SYS_setgroups,
        SYS_sethostname,
        SYS_setitimer,
        SYS_setns,
        SYS_setpgid,
        SYS_setpriority,
        SYS_setregid,
        SYS_setresgid,
        SYS_setresuid,
        SYS_setreuid,
        SYS_setrlimit,
        SYS_setsid,
        SYS_setsockopt,
        SYS_settimeofday,
        SYS_setuid,
        SYS_setxattr,
        SYS_shmat,
        SYS_shmctl,
        SYS_shmdt,
        SYS_shmget,
        SYS_shutdown,
        SYS_sigaltstack,
        SYS_signalfd,
        SYS_signalfd4,
        SYS_socket,
        SYS_socketpair,
        SYS_splice,
        SYS_stat,
        SYS_statfs,
        SYS_statx,
        SYS_swapoff,
        SYS_swapon,
        SYS_symlink,
        SYS_symlinkat,
        SYS_sync,
        SYS_sync_file_range,
        SYS_syncfs,
        SYS_sysfs,
        SYS_sysinfo,
        SYS_syslog,
        SYS_tee,
        SYS_tgkill,
        SYS_time,
        SYS_timer_create,
        SYS_timer_delete,
        SYS_timer_getoverrun,
        SYS_timer_gettime,
        SYS_timer_settime,
        SYS_timerfd_create,
        SYS_timerfd_gettime,
        SYS_timerfd_settime,
        SYS_times,
        SYS_tkill,
        SYS_truncate,
        SYS_tuxcall,
        SYS_umask,
        SYS_umount2,
        SYS_uname,
        SYS_unlink,
        SYS_unlinkat,
        SYS_unshare,
        SYS_uselib,
        SYS_userfaultfd,
        SYS_ustat,
        SYS_utime,
        SYS_utimensat,
        SYS_utimes,
        SYS_vfork,
        SYS_vhangup,
        SYS_vmsplice,
        SYS_vserver,
        SYS_wait4,
        SYS_waitid,
        SYS_write,
        SYS_writev,
    );

    /// Numbers the libc crate lacks for x86_64 (on one flavour or both).
    pub const EXTRA: &[(&str, u32)] =
        &[("create_module", 174), ("get_kernel_syms", 177), ("query_module", 178), ("io_pgetevents", 333), ("uretprobe", 335), ("uprobe", 336)];
}

#[cfg(target_arch = "aarch64")]
mod arch {
    /// EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    pub const AUDIT_ARCH: u32 = 0xC000_00B7;
    pub const X32_SYSCALL_BIT: Option<u32> = None;
    pub const NAMES: &[&str] = &["arm64", "aarch64", "SCMP_ARCH_AARCH64"];

    /// Every syscall the libc crate defines for aarch64 (lp64) in both its gnu and musl flavours.
    pub const LIBC: &[(&str, u32)] = libc_syscalls!(
        SYS_accept,
        SYS_accept4,
        SYS_acct,
        SYS_add_key,
        SYS_adjtimex,
        SYS_bind,
        SYS_bpf,
        SYS_brk,
        SYS_capget,
        SYS_capset,
        SYS_chdir,
        SYS_chroot,
        SYS_clock_adjtime,
        SYS_clock_getres,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_clock_settime,
        SYS_clone,
        SYS_clone3,
        SYS_close,
        SYS_close_range,
        SYS_connect,
        SYS_copy_file_range,
        SYS_delete_module,
        SYS_dup,
        SYS_dup3,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        SYS_eventfd2,
        SYS_execve,
        SYS_execveat,
        SYS_exit,
        SYS_exit_group,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_fadvise64,
        SYS_fallocate,
        SYS_fanotify_init,
        SYS_fanotify_mark,
        SYS_fchdir,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchown,
        SYS_fchownat,
        SYS_fcntl,
        SYS_fdatasync,
        SYS_fgetxattr,
        SYS_finit_module,
        SYS_flistxattr,
        SYS_flock,
        SYS_fremovexattr,
        SYS_fsconfig,
        SYS_fsetxattr,
        SYS_fsmount,
        SYS_fsopen,
        SYS_fspick,
        SYS_fstat,
        SYS_fstatfs,
        SYS_fsync,
        SYS_ftruncate,
        SYS_futex,
        SYS_futex_waitv,
        SYS_get_mempolicy,
        SYS_get_robust_list,
        SYS_getcpu,
        SYS_getcwd,
        SYS_getdents64,
        SYS_getegid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getgroups,
        SYS_getitimer,
        SYS_getpeername,
        SYS_getpgid,
        SYS_getpid,
        SYS_getppid,
        SYS_getpriority,
        SYS_getrandom,
        SYS_getresgid,
        SYS_getresuid,
        SYS_getrlimit,
        SYS_getrusage,
        SYS_getsid,
        SYS_getsockname,
        SYS_getsockopt,
        SYS_gettid,
        SYS_gettimeofday,
        SYS_getuid,
        SYS_getxattr,
        SYS_init_module,
        SYS_inotify_add_watch,
        SYS_inotify_init1,
        SYS_inotify_rm_watch,
        SYS_io_cancel,
        SYS_io_destroy,
        SYS_io_getevents,
        SYS_io_setup,
        SYS_io_submit,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_io_uring_setup,
        SYS_ioctl,
        SYS_ioprio_get,
        SYS_ioprio_set,
        SYS_kcmp,
        SYS_kexec_load,
        SYS_keyctl,
        SYS_kill,
        SYS_landlock_add_rule,
        SYS_landlock_create_ruleset,
        SYS_landlock_restrict_self,
        SYS_lgetxattr,
        SYS_linkat,
        SYS_listen,
        SYS_listxattr,
        SYS_llistxattr,
        SYS_lookup_dcookie,
        SYS_lremovexattr,
        SYS_lseek,
        SYS_lsetxattr,
        SYS_madvise,
        SYS_mbind,
        SYS_membarrier,
        SYS_memfd_create,
        SYS_memfd_secret,
        SYS_migrate_pages,
        SYS_mincore,
        SYS_mkdirat,
        SYS_mknodat,
        SYS_mlock,
        SYS_mlock2,
        SYS_mlockall,
        SYS_mmap,
        SYS_mount,
        SYS_mount_setattr,
        SYS_move_mount,
        SYS_move_pages,
        SYS_mprotect,
        SYS_mq_getsetattr,
        SYS_mq_notify,
        SYS_mq_open,
        SYS_mq_timedreceive,
        SYS_mq_timedsend,
        SYS_mq_unlink,
        SYS_mremap,
        SYS_mseal,
        SYS_msgctl,
        SYS_msgget,
        SYS_msgrcv,
        SYS_msgsnd,
        SYS_msync,
        SYS_munlock,
        SYS_munlockall,
        SYS_munmap,
        SYS_name_to_handle_at,
        SYS_nanosleep,
        SYS_newfstatat,
        SYS_nfsservctl,
        SYS_open_by_handle_at,
        SYS_open_tree,
        SYS_openat,
        SYS_openat2,
        SYS_perf_event_open,
        SYS_personality,
        SYS_pidfd_getfd,
        SYS_pidfd_open,
        SYS_pidfd_send_signal,
        SYS_pipe2,
        SYS_pivot_root,
        SYS_pkey_alloc,
        SYS_pkey_free,
        SYS_pkey_mprotect,
        SYS_ppoll,
        SYS_prctl,
        SYS_pread64,
        SYS_preadv,
        SYS_preadv2,
        SYS_prlimit64,
        SYS_process_madvise,
        SYS_process_mrelease,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pselect6,
        SYS_ptrace,
        SYS_pwrite64,
        SYS_pwritev,
        SYS_pwritev2,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_read,
        SYS_readahead,
        SYS_readlinkat,
        SYS_readv,
        SYS_reboot,
        SYS_recvfrom,
        SYS_recvmmsg,
        SYS_recvmsg,
        SYS_remap_file_pages,
        SYS_removexattr,
        SYS_renameat,
        SYS_renameat2,
        SYS_request_key,
        SYS_restart_syscall,
        SYS_rseq,
        SYS_rt_sigaction,
        SYS_rt_sigpending,
        SYS_rt_sigprocmask,
        SYS_rt_sigqueueinfo,
        SYS_rt_sigreturn,
        SYS_rt_sigsuspend,
        SYS_rt_sigtimedwait,
        SYS_rt_tgsigqueueinfo,
        SYS_sched_get_priority_max,
        SYS_sched_get_priority_min,
        SYS_sched_getaffinity,
        SYS_sched_getattr,
        SYS_sched_getparam,
        SYS_sched_getscheduler,
        SYS_sched_rr_get_interval,
        SYS_sched_setaffinity,
        SYS_sched_setattr,
        SYS_sched_setparam,
        SYS_sched_setscheduler,
        SYS_sched_yield,
        SYS_seccomp,
        SYS_semctl,
        SYS_semget,
        SYS_semop,
        SYS_semtimedop,
        SYS_sendfile,
        SYS_sendmmsg,
        SYS_sendmsg,
        SYS_sendto,
        SYS_set_mempolicy,
        SYS_set_mempolicy_home_node,
        SYS_set_robust_list,
        SYS_set_tid_address,
        SYS_setdomainname,
        SYS_setfsgid,
        SYS_setfsuid,
        SYS_setgid,
        SYS_setgroups,
        SYS_sethostname,
        SYS_setitimer,
        SYS_setns,
        SYS_setpgid,
        SYS_setpriority,
        SYS_setregid,
        SYS_setresgid,
        SYS_setresuid,
        SYS_setreuid,
        SYS_setrlimit,
        SYS_setsid,
        SYS_setsockopt,
        SYS_settimeofday,
        SYS_setuid,
        SYS_setxattr,
        SYS_shmat,
        SYS_shmctl,
        SYS_shmdt,
        SYS_shmget,
        SYS_shutdown,
        SYS_sigaltstack,
        SYS_signalfd4,
        SYS_socket,
        SYS_socketpair,
        SYS_splice,
        SYS_statfs,
        SYS_statx,
        SYS_swapoff,
        SYS_swapon,
        SYS_symlinkat,
        SYS_sync,
        SYS_sync_file_range,
        SYS_syncfs,
        SYS_sysinfo,
        SYS_syslog,
        SYS_tee,
        SYS_tgkill,
        SYS_timer_create,
        SYS_timer_delete,
        SYS_timer_getoverrun,
        SYS_timer_gettime,
        SYS_timer_settime,
        SYS_timerfd_create,
        SYS_timerfd_gettime,
        SYS_timerfd_settime,
        SYS_times,
        SYS_tkill,
        SYS_truncate,
        SYS_umask,
        SYS_umount2,
        SYS_uname,
        SYS_unlinkat,
        SYS_unshare,
        SYS_userfaultfd,
        SYS_utimensat,
        SYS_vhangup,
        SYS_vmsplice,
        SYS_wait4,
        SYS_waitid,
        SYS_write,
        SYS_writev,
    );

    /// Numbers the libc crate lacks for aarch64 (on one flavour or both).
    pub const EXTRA: &[(&str, u32)] = &[("io_pgetevents", 292), ("kexec_file_load", 294)];
}

fn syscall_table() -> &'static HashMap<&'static str, u32> {
    static TABLE: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = HashMap::with_capacity(arch::LIBC.len() + 32);
        for (name, nr) in arch::LIBC {
            map.insert(name.strip_prefix("SYS_").unwrap_or(name), *nr);
        }
        for (name, nr) in arch::EXTRA.iter().chain(NEWER_SYSCALLS) {
            map.entry(*name).or_insert(*nr);
        }
        map
    })
}

/// The number of a syscall on the architecture this crate was compiled for, by its kernel name
/// (`"openat"`, `"_sysctl"`). None when the architecture has no such syscall.
pub fn syscall_number(name: &str) -> Option<u32> {
    syscall_table().get(name).copied()
}

// ---------------------------------------------------------------------------------------------
// Classic BPF: the program and a small assembler

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

const OFF_NR: u32 = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
const OFF_ARCH: u32 = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
const OFF_ARGS: u32 = std::mem::offset_of!(libc::seccomp_data, args) as u32;

/// Offsets of the low and high 32-bit words of `args[i]` (both supported arches are little-endian).
const fn arg_words(i: u8) -> (u32, u32) {
    let base = OFF_ARGS + 8 * i as u32;
    if cfg!(target_endian = "little") {
        (base, base + 4)
    } else {
        (base + 4, base)
    }
}

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

const fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// A seccomp filter ready for [`load`]: classic BPF instructions, at most 4096 of them.
#[derive(Clone)]
pub struct Program {
    filter: Vec<sock_filter>,
}

impl Program {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.filter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }

    pub fn instructions(&self) -> &[sock_filter] {
        &self.filter
    }

    /// The instructions as bytes, each laid out as the kernel reads it (native endian): how a
    /// filter compiled once in the addon reaches each helper, and a helper's the init.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.filter.len() * 8);
        for i in &self.filter {
            out.extend(i.code.to_ne_bytes());
            out.extend([i.jt, i.jf]);
            out.extend(i.k.to_ne_bytes());
        }
        out
    }

    /// Whether `bytes` can be a filter from [`Program::to_bytes`]: 1 to 4096 whole instructions.
    pub fn check_bytes(bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(8) || bytes.len() / 8 > MAX_INSNS {
            return Err(format!("a compiled filter of {} bytes is not 1 to {MAX_INSNS} BPF instructions", bytes.len()));
        }
        Ok(())
    }

    /// A filter from [`Program::to_bytes`]. Only its size is checked here: the kernel checks
    /// every instruction when it loads them ([`load`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Program, String> {
        Program::check_bytes(bytes)?;
        let filter = bytes
            .chunks_exact(8)
            .map(|c| sock_filter { code: u16::from_ne_bytes([c[0], c[1]]), jt: c[2], jf: c[3], k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) })
            .collect();
        Ok(Program { filter })
    }
}

impl fmt::Debug for Program {
    /// `{:?}` gives the length; `{:#?}` a disassembly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Program({} instructions)", self.len())?;
        if f.alternate() {
            for (pc, i) in self.filter.iter().enumerate() {
                let to = |off: u32| pc as u32 + 1 + off;
                write!(f, "\n{pc:4}: ")?;
                match i.code {
                    LD_ABS => write!(f, "ld [{}]", i.k)?,
                    AND_K => write!(f, "and #{:#x}", i.k)?,
                    JA => write!(f, "ja {}", to(i.k))?,
                    JEQ_K | JGT_K | JGE_K | JSET_K => {
                        let op = match i.code {
                            JEQ_K => "jeq",
                            JGT_K => "jgt",
                            JGE_K => "jge",
                            _ => "jset",
                        };
                        write!(f, "{op} #{:#x} -> {} else {}", i.k, to(i.jt as u32), to(i.jf as u32))?
                    }
                    RET_K => write!(f, "ret #{:#x}", i.k)?,
                    c => write!(f, "code {c:#x} k {:#x}", i.k)?,
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Label(usize);

/// Where a conditional jump goes: the next instruction, or a label (always forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Next,
    To(Label),
}
use Target::{Next, To};

#[derive(Clone, Copy, Debug)]
enum Cmp {
    Eq,
    Gt,
    Ge,
    Set,
}

enum Item {
    Insn(sock_filter),
    Jump { code: u16, k: u32, jt: Target, jf: Target },
    Ja(Label),
    Bind(Label),
}

/// Straight-line BPF with symbolic forward jumps. `finish` lays it out: a conditional jump
/// reaches at most 255 instructions, so a farther target gets a `ja` trampoline placed right
/// after the jump (an unconditional `ja` reaches 2^32).
#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

fn insn(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    /// A = the 32-bit word at `offset` in `seccomp_data`.
    fn load(&mut self, offset: u32) {
        self.items.push(Item::Insn(insn(LD_ABS, offset)));
    }

    fn and(&mut self, k: u32) {
        self.items.push(Item::Insn(insn(AND_K, k)));
    }

    fn ret(&mut self, k: u32) {
        self.items.push(Item::Insn(insn(RET_K, k)));
    }

    fn ja(&mut self, to: Label) {
        self.items.push(Item::Ja(to));
    }

    fn goto(&mut self, t: Target) {
        if let To(l) = t {
            self.ja(l);
        }
    }

    /// if (A cmp k) goto jt else goto jf
    fn jump(&mut self, cmp: Cmp, k: u32, jt: Target, jf: Target) {
        if jt == jf {
            return self.goto(jt);
        }
        let code = match cmp {
            Cmp::Eq => JEQ_K,
            Cmp::Gt => JGT_K,
            Cmp::Ge => JGE_K,
            Cmp::Set => JSET_K,
        };
        self.items.push(Item::Jump { code, k, jt, jf });
    }

    fn finish(mut self) -> Result<Program, String> {
        // A `ja` to the very next instruction is a no-op.
        let mut keep = vec![true; self.items.len()];
        for (i, item) in self.items.iter().enumerate() {
            if let Item::Ja(l) = item {
                let next_binds = self.items[i + 1..].iter().take_while(|it| matches!(it, Item::Bind(_)));
                if next_binds.clone().any(|it| matches!(it, Item::Bind(b) if b == l)) {
                    keep[i] = false;
                }
            }
        }
        let mut keep = keep.into_iter();
        self.items.retain(|_| keep.next().unwrap_or(true));

        // Lay out until no near jump overflows; trampolines only get added, so this ends.
        let n = self.items.len();
        let mut far = vec![[false; 2]; n];
        let (pos, label_pos, total) = loop {
            let mut pos = vec![0usize; n];
            let mut label_pos: Vec<Option<usize>> = vec![None; self.labels];
            let mut p = 0usize;
            for (i, item) in self.items.iter().enumerate() {
                pos[i] = p;
                match item {
                    Item::Bind(l) => {
                        if label_pos[l.0].replace(p).is_some() {
                            return Err(format!("bpf: label {} bound twice", l.0));
                        }
                    }
                    Item::Jump { .. } => p += 1 + far[i][0] as usize + far[i][1] as usize,
                    _ => p += 1,
                }
            }
            let mut grew = false;
            for (i, item) in self.items.iter().enumerate() {
                let mut check = |t: Target, branch: usize| -> Result<(), String> {
                    let To(l) = t else { return Ok(()) };
                    let at = label_pos[l.0].ok_or_else(|| format!("bpf: label {} never bound", l.0))?;
                    if at <= pos[i] {
                        return Err(format!("bpf: backward jump to label {}", l.0));
                    }
                    if branch < 2 && !far[i][branch] && at - (pos[i] + 1) > u8::MAX as usize {
                        far[i][branch] = true;
                        grew = true;
                    }
                    Ok(())
                };
                match *item {
                    Item::Jump { jt, jf, .. } => {
                        check(jt, 0)?;
                        check(jf, 1)?;
                    }
                    Item::Ja(l) => check(To(l), 2)?,
                    _ => {}
                }
            }
            if !grew {
                break (pos, label_pos, p);
            }
        };
        if total == 0 {
            return Err("bpf: empty program".into());
        }
        if total > MAX_INSNS {
            return Err(format!("the filter needs {total} BPF instructions; the kernel takes at most {MAX_INSNS}"));
        }

        let mut filter = Vec::with_capacity(total);
        let target_of = |l: Label| label_pos[l.0].expect("checked above");
        for (i, item) in self.items.iter().enumerate() {
            match *item {
                Item::Bind(_) => {}
                Item::Insn(ins) => filter.push(ins),
                Item::Ja(l) => filter.push(insn(JA, (target_of(l) - (pos[i] + 1)) as u32)),
                Item::Jump { code, k, jt, jf } => {
                    let here = pos[i];
                    let trampolines = far[i][0] as usize + far[i][1] as usize;
                    let mut next_tramp = 0usize;
                    let mut tramps = Vec::with_capacity(2);
                    let mut offset = |t: Target, is_far: bool| -> u8 {
                        match t {
                            Next => trampolines as u8,
                            To(l) if is_far => {
                                let slot = next_tramp;
                                next_tramp += 1;
                                tramps.push((here + 1 + slot, target_of(l)));
                                slot as u8
                            }
                            To(l) => (target_of(l) - (here + 1)) as u8,
                        }
                    };
                    let jt = offset(jt, far[i][0]);
                    let jf = offset(jf, far[i][1]);
                    filter.push(sock_filter { code, jt, jf, k });
                    for (at, to) in tramps {
                        filter.push(insn(JA, (to - (at + 1)) as u32));
                    }
                }
            }
        }
        debug_assert_eq!(filter.len(), total);
        if filter.last().map(|i| i.code) != Some(RET_K) {
            return Err("bpf: the last instruction must be a return".into());
        }
        Ok(Program { filter })
    }
}

/// One `ret` per distinct action, emitted together at the end.
#[derive(Default)]
struct Rets {
    rets: Vec<(u32, Label)>,
}

impl Rets {
    fn get(&mut self, a: &mut Asm, action: u32) -> Label {
        if let Some((_, l)) = self.rets.iter().find(|(k, _)| *k == action) {
            return *l;
        }
        let l = a.label();
        self.rets.push((action, l));
        l
    }

    fn emit(self, a: &mut Asm) {
        for (action, l) in self.rets {
            a.bind(l);
            a.ret(action);
        }
    }
}

/// Arch check, then A = syscall number; a foreign arch or an x32 number goes to `kill`.
fn prologue(a: &mut Asm, kill: Label) {
    a.load(OFF_ARCH);
    a.jump(Cmp::Eq, arch::AUDIT_ARCH, Next, To(kill));
    a.load(OFF_NR);
    if let Some(bit) = arch::X32_SYSCALL_BIT {
        a.jump(Cmp::Set, bit, To(kill), Next);
    }
}

/// A run of syscall numbers, from `start` to the next segment's start, with one outcome.
struct Seg {
    start: u32,
    to: Label,
}

/// With A holding an argument, jump to `allow` when it is one of `values`, else to `refuse`.
fn allow_only(a: &mut Asm, values: &[u32], allow: Label, refuse: Label) {
    for (i, &v) in values.iter().enumerate() {
        let otherwise = if i + 1 == values.len() { To(refuse) } else { Next };
        a.jump(Cmp::Eq, v, To(allow), otherwise);
    }
}

/// With A holding the syscall number, jump to the label of its entry, or to `default`: a
/// binary search over the segments of the number line that share a label. Each comparison is one
/// `jge`; a small stretch with a few single numbers in a sea of one outcome becomes a `jeq` chain.
fn dispatch(a: &mut Asm, mut entries: Vec<(u32, Label)>, default: Label) -> Result<(), String> {
    entries.sort_by_key(|e| e.0);
    for w in entries.windows(2) {
        if w[0].0 == w[1].0 && w[0].1 != w[1].1 {
            return Err(format!("bpf: syscall {} has two outcomes", w[0].0));
        }
    }
    entries.dedup();
    let mut segs = vec![Seg { start: 0, to: default }];
    let push = |segs: &mut Vec<Seg>, start: u32, to: Label| {
        let last = segs.last_mut().expect("never empty");
        if last.to == to {
            return;
        }
        if last.start == start {
            last.to = to;
        } else {
            segs.push(Seg { start, to });
        }
    };
    let mut covered: u64 = 0;
    for &(nr, to) in &entries {
        if u64::from(nr) > covered {
            push(&mut segs, covered as u32, default);
        }
        push(&mut segs, nr, to);
        covered = u64::from(nr) + 1;
    }
    if covered <= u64::from(u32::MAX) {
        push(&mut segs, covered as u32, default);
    }
    if segs.len() == 1 {
        a.ja(segs[0].to);
    } else {
        search(a, &segs, 0, segs.len(), 1 << 32);
    }
    Ok(())
}

/// Emit the search over `segs[lo..hi]` (at least two), which cover the numbers up to `end`.
fn search(a: &mut Asm, segs: &[Seg], lo: usize, hi: usize, end: u64) {
    if chain(a, segs, lo, hi, end) {
        return;
    }
    let mid = lo + (hi - lo) / 2;
    let bound = segs[mid].start;
    let leaf = |from: usize, to: usize| (to - from == 1).then(|| segs[from].to);
    match (leaf(lo, mid), leaf(mid, hi)) {
        (Some(l), Some(r)) => a.jump(Cmp::Ge, bound, To(r), To(l)),
        (None, Some(r)) => {
            a.jump(Cmp::Ge, bound, To(r), Next);
            search(a, segs, lo, mid, bound.into());
        }
        (Some(l), None) => {
            a.jump(Cmp::Ge, bound, Next, To(l));
            search(a, segs, mid, hi, end);
        }
        (None, None) => {
            let right = a.label();
            a.jump(Cmp::Ge, bound, To(right), Next);
            search(a, segs, lo, mid, bound.into());
            a.bind(right);
            search(a, segs, mid, hi, end);
        }
    }
}

/// `segs[lo..hi]` as `jeq` tests of its single-number segments when every other segment shares
/// one outcome, and that is shorter than the search tree.
fn chain(a: &mut Asm, segs: &[Seg], lo: usize, hi: usize, end: u64) -> bool {
    const MAX_CHAIN: usize = 3;
    let seg_end = |i: usize| if i + 1 < hi { u64::from(segs[i + 1].start) } else { end };
    for sea in [segs[lo].to, segs[lo + 1].to] {
        let points: Vec<usize> = (lo..hi).filter(|&i| segs[i].to != sea).collect();
        let singles = points.iter().all(|&i| seg_end(i) - u64::from(segs[i].start) == 1);
        if singles && points.len() <= MAX_CHAIN && points.len() < hi - lo - 1 {
            for (n, &i) in points.iter().enumerate() {
                let otherwise = if n + 1 == points.len() { To(sea) } else { Next };
                a.jump(Cmp::Eq, segs[i].start, To(segs[i].to), otherwise);
            }
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// The default profile

/// Denied with EPERM wherever the architecture has them (names absent on this arch are skipped).
const DEFAULT_EPERM: &[&str] = &[
    // Namespaces: a new user namespace hands out capabilities over fresh kernel objects.
    // (clone and clone3 are handled by their flags below.)
    "unshare",
    "setns",
    // The mount API, old and new.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "open_tree_attr",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // The kernel keyring is not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // Large kernel attack surface with a history of privilege escalations.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Kernel code.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    // Other processes' memory and descriptors.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    // File handles skip path-based checks.
    "open_by_handle_at",
    "name_to_handle_at",
    // Host administration.
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "vhangup",
    "nfsservctl",
    "fanotify_init",
    // Obsolete interfaces nobody needs.
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    // Direct hardware and real-mode access, and the x86 per-process descriptor table (a history of
    // kernel bugs; only 16-bit and Wine-style code needs it).
    "modify_ldt",
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
    // Memory taken out of the kernel's direct map: while any exists the host cannot hibernate.
    "memfd_secret",
    // Clocks are not namespaced (time namespaces only offset the monotonic ones).
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
];

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | 0x80) as u32; // CLONE_NEWTIME

/// personality(2) values that stay allowed: PER_LINUX, PER_LINUX32, UNAME26, both, and the query.
const PERSONALITY_ALLOWED: &[u32] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

const F_SETLEASE: u32 = libc::F_SETLEASE as u32;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;
const TIOCSETD: u32 = 0x5423;

/// S_ISUID | S_ISGID: a file the sandbox makes set-user-id or set-group-id in a read-write bind
/// would run with the sandbox's host id for any host user who runs it (systemd calls the same
/// refusal RestrictSUIDSGID). Compared in the mode's low word, as the kernel reads it.
#[allow(clippy::unnecessary_cast)] // mode_t is not u32 on every target
const SET_ID_BITS: u32 = (libc::S_ISUID | libc::S_ISGID) as u32;

/// What may carry a mode: O_CREAT, and __O_TMPFILE (O_TMPFILE without its O_DIRECTORY).
const CREATING: u32 = (libc::O_CREAT | 0o20000000) as u32;

/// Syscalls whose mode (the argument given) may set the set-id bits; open and openat only
/// when their flags create. Not mkdir: the kernel keeps only the permission and sticky bits of
/// its mode (a directory's setgid comes from its parent).
const MODE_IN_ARG: &[(&str, u8)] = &[("chmod", 1), ("fchmod", 1), ("creat", 1), ("mknod", 1), ("fchmodat", 2), ("fchmodat2", 2), ("mknodat", 2)];

const SOCKET_FAMILIES: &[u32] = &[libc::AF_UNIX as u32, libc::AF_INET as u32, libc::AF_INET6 as u32, libc::AF_NETLINK as u32];

/// The built-in profile for `seccomp: 'default'`: a denylist, so shells, compilers, Python, Node,
/// threads and fork keep working. See the module docs for its shape. For a sandbox without core
/// dumps (`limits.coreDumps` false, the default), which a warm helper builds ahead.
pub fn default_program() -> Program {
    default_program_for(false)
}

/// The built-in profile for a sandbox with or without core dumps (with them, its RLIMIT_CORE is
/// its own to change): the one place that chooses.
pub fn default_program_for(core_dumps: bool) -> Program {
    build_default(core_dumps).expect("the built-in seccomp profile assembles")
}

/// RLIMIT_CORE's number, the same on every architecture Linux has.
const RLIMIT_CORE: u32 = 4;

fn build_default(core_dumps: bool) -> Result<Program, String> {
    let mut a = Asm::default();
    let mut rets = Rets::default();
    // The default return first: a `ja` to it straight after the search then disappears.
    let allow = rets.get(&mut a, RET_ALLOW);
    let kill = rets.get(&mut a, RET_KILL_PROCESS);
    let eperm = rets.get(&mut a, ret_errno(libc::EPERM));
    let enosys = rets.get(&mut a, ret_errno(libc::ENOSYS));
    let eafnosupport = rets.get(&mut a, ret_errno(libc::EAFNOSUPPORT));
    // Success, the call not made (only without core dumps: an unused return is left out).
    let as_if_done = if core_dumps { allow } else { rets.get(&mut a, ret_errno(0)) };
    let (clone, personality, ioctl, socket) = (a.label(), a.label(), a.label(), a.label());
    let (mode1, mode2, open, openat) = (a.label(), a.label(), a.label(), a.label());
    let (prlimit, new_limit, new_core, setrlimit, fcntl) = (a.label(), a.label(), a.label(), a.label(), a.label());

    prologue(&mut a, kill);
    let mut entries: Vec<(u32, Label)> = DEFAULT_EPERM.iter().filter_map(|name| syscall_number(name)).map(|nr| (nr, eperm)).collect();
    entries.extend([
        // ENOSYS, not EPERM: libc then falls back to clone, whose flags a filter can read
        // (clone3 passes them in memory).
        (libc::SYS_clone3 as u32, enosys),
        (libc::SYS_clone as u32, clone),
        (libc::SYS_personality as u32, personality),
        (libc::SYS_ioctl as u32, ioctl),
        (libc::SYS_socket as u32, socket),
        (libc::SYS_socketpair as u32, socket),
        (libc::SYS_prlimit64 as u32, prlimit),
        (libc::SYS_fcntl as u32, fcntl),
    ]);
    if !core_dumps {
        entries.push((libc::SYS_setrlimit as u32, setrlimit));
    }
    for (name, arg) in MODE_IN_ARG {
        if let Some(nr) = syscall_number(name) {
            entries.push((nr, if *arg == 1 { mode1 } else { mode2 }));
        }
    }
    entries.extend(syscall_number("open").map(|nr| (nr, open)));
    entries.push((libc::SYS_openat as u32, openat));
    // Its mode is in memory, out of a filter's reach: ENOSYS, and libc's callers use openat.
    entries.push((libc::SYS_openat2 as u32, enosys));
    // The kernel's AIO events (fs.aio-max-nr) are one pool for the whole host, bounded by no
    // cgroup: one sandbox could take them all. ENOSYS, a kernel without AIO's answer, on which
    // libaio's users fall back to threads.
    entries.push((libc::SYS_io_setup as u32, enosys));
    dispatch(&mut a, entries, allow)?;

    // clone: the flags are args[0] on x86_64 and aarch64 alike (only the order of the tid and
    // tls arguments differs), and the kernel reads only their low 32 bits.
    a.bind(clone);
    a.load(arg_words(0).0);
    a.jump(Cmp::Set, CLONE_NS_FLAGS, To(eperm), To(allow));

    // personality(unsigned int): no ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and the like.
    a.bind(personality);
    a.load(arg_words(0).0);
    allow_only(&mut a, PERSONALITY_ALLOWED, allow, eperm);

    // ioctl(fd, unsigned int cmd): compare the low word only, as the kernel does, so high bits
    // set by the caller do not hide TIOCSTI (typing into the terminal), TIOCLINUX, or TIOCSETD.
    // TIOCSETD needs no capability and its change outlives the sandbox: with the caller's
    // terminal as stdio, a line discipline set from inside (N_NULL) breaks that terminal for the
    // caller, and it reaches line-discipline code that has had its share of kernel bugs. The
    // other terminal ioctls that reach beyond the sandbox (TIOCCONS, TIOCSCTTY stealing,
    // TIOCVHANGUP) check CAP_SYS_ADMIN in the initial user namespace, which the sandbox never has.
    a.bind(ioctl);
    a.load(arg_words(1).0);
    a.jump(Cmp::Eq, TIOCSTI, To(eperm), Next);
    a.jump(Cmp::Eq, TIOCSETD, To(eperm), Next);
    a.jump(Cmp::Eq, TIOCLINUX, To(eperm), To(allow));

    // socket/socketpair(int family): AF_VSOCK would reach the VM host even from a fresh network
    // namespace; AF_PACKET, AF_BLUETOOTH and friends are attack surface nobody here needs.
    a.bind(socket);
    a.load(arg_words(0).0);
    allow_only(&mut a, SOCKET_FAMILIES, allow, eafnosupport);

    // No set-user-id or set-group-id bit in a mode: chmod and the like, and what open creates.
    a.bind(open);
    a.load(arg_words(1).0);
    a.jump(Cmp::Set, CREATING, Next, To(allow));
    a.load(arg_words(2).0);
    a.jump(Cmp::Set, SET_ID_BITS, To(eperm), To(allow));
    a.bind(openat);
    a.load(arg_words(2).0);
    a.jump(Cmp::Set, CREATING, Next, To(allow));
    a.load(arg_words(3).0);
    a.jump(Cmp::Set, SET_ID_BITS, To(eperm), To(allow));
    a.bind(mode1);
    a.load(arg_words(1).0);
    a.jump(Cmp::Set, SET_ID_BITS, To(eperm), To(allow));
    a.bind(mode2);
    a.load(arg_words(2).0);
    a.jump(Cmp::Set, SET_ID_BITS, To(eperm), To(allow));

    // prlimit64(pid_t pid, resource, new, old): no new limit for pid 1, the sandbox's init, which
    // runs as the same ids as a command (the kernel's only check): a lowered RLIMIT_NOFILE there
    // loses the next exec's stdio, RLIMIT_CPU kills it, and every later exec inherits them.
    // Reading limits stays allowed; the kernel reads the pid's and the resource's low words only.
    a.bind(prlimit);
    a.load(arg_words(2).0);
    a.jump(Cmp::Eq, 0, Next, To(new_limit));
    a.load(arg_words(2).1);
    a.jump(Cmp::Eq, 0, To(allow), To(new_limit));
    a.bind(new_limit);
    if !core_dumps {
        a.load(arg_words(1).0);
        a.jump(Cmp::Eq, RLIMIT_CORE, To(new_core), Next);
    }
    a.load(arg_words(0).0);
    a.jump(Cmp::Eq, 1, To(eperm), To(allow));
    // A new RLIMIT_CORE (see setrlimit below): answered as done where the old one is not asked
    // for too, which the filter cannot fill in: refused then (util-linux's prlimit asks for both).
    if !core_dumps {
        a.bind(new_core);
        a.load(arg_words(3).0);
        a.jump(Cmp::Eq, 0, Next, To(eperm));
        a.load(arg_words(3).1);
        a.jump(Cmp::Eq, 0, To(as_if_done), To(eperm));
    }

    // Without core dumps, RLIMIT_CORE stays at the 1 byte the setup gave: the one value a
    // core_pattern that pipes to a program honours (0 would have the kernel start that program on
    // the host, as root, for each crash). A change is answered as done: a program lowering it
    // (`ulimit -c 0`, a daemon guarding its secrets) already has no core dumps, and raising it
    // past the hard limit of 1 would be refused anyway. setrlimit(resource, rlim), the low word.
    if !core_dumps {
        a.bind(setrlimit);
        a.load(arg_words(0).0);
        a.jump(Cmp::Eq, RLIMIT_CORE, To(as_if_done), To(allow));
    }

    // fcntl(fd, unsigned int cmd): no lease. The kernel lets the file's owner take one on a
    // read-only mount too, and then holds every other open of the file (another sandbox's exec
    // of a shared rootfs, the caller's own reads of a read-write bind, on Node's thread pool)
    // for fs.lease-break-time, 45 s by default. The low word only, as the kernel reads it.
    a.bind(fcntl);
    a.load(arg_words(1).0);
    a.jump(Cmp::Eq, F_SETLEASE, To(eperm), To(allow));

    rets.emit(&mut a);
    a.finish()
}

// ---------------------------------------------------------------------------------------------
// OCI / Docker profiles

/// What an OCI profile is resolved against. Docker profiles gate rules on `includes`/`excludes`
/// (`caps`, `arches`, `minKernel`); Docker resolves them before handing the profile to runc, and
/// so do we, here.
#[derive(Debug, Clone, Default)]
pub struct OciOptions {
    /// Capabilities the command keeps (`"CAP_SYS_ADMIN"` or `"sys_admin"`). Default: none, as in
    /// a default sandbox.
    pub capabilities: Vec<String>,
    /// Kernel (major, minor) for `minKernel`; None reads the running kernel's.
    pub kernel: Option<(u32, u32)>,
}

/// An argument comparison, 64 bits wide and unsigned, as libseccomp does on 64-bit arches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// (arg & mask) == value
    MaskedEq(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Cond {
    arg: u8,
    op: Op,
    value: u64,
}

/// All conditions must hold (an empty list always holds); then `action` is returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rule {
    conds: Vec<Cond>,
    action: u32,
}

struct Profile {
    default: u32,
    /// Per syscall number, its rules in file order; the first that matches wins.
    rules: BTreeMap<u32, Vec<Rule>>,
}

/// Compile a Docker/OCI seccomp profile (JSON) for this architecture, as for a command that keeps
/// no capabilities on the running kernel. See [`compile_oci_with`].
pub fn compile_oci(profile_json: &[u8]) -> Result<Program, String> {
    compile_oci_with(profile_json, &OciOptions::default())
}

/// Compile a Docker/OCI seccomp profile: `defaultAction`, `defaultErrnoRet`, `architectures`
/// (only the native arch is compiled; a foreign arch is always killed, as are x32 numbers), and
/// `syscalls[]` with `names` (or `name`), `action`, `errnoRet`, `args` (ANDed within a rule) and
/// Docker's `includes`/`excludes`. Several rules for one syscall are alternatives: the first that
/// matches, in file order, wins. Names of other architectures are skipped, as libseccomp does; a
/// name no architecture has is refused (see [`known_name`]).
/// Errors name the field: `syscalls[3].action: unknown action "SCMP_ACT_FOO"`.
pub fn compile_oci_with(profile_json: &[u8], opts: &OciOptions) -> Result<Program, String> {
    let profile = parse_profile(profile_json, opts)?;
    assemble_profile(&profile)
}

fn assemble_profile(p: &Profile) -> Result<Program, String> {
    let mut a = Asm::default();
    let mut rets = Rets::default();
    let default = rets.get(&mut a, p.default);
    let kill = rets.get(&mut a, RET_KILL_PROCESS);
    prologue(&mut a, kill);

    // Syscalls with identical rule lists share one block.
    let mut blocks: Vec<(&[Rule], Label)> = Vec::new();
    let mut block_of: HashMap<&[Rule], Label> = HashMap::new();
    let mut entries = Vec::with_capacity(p.rules.len());
    for (&nr, rules) in &p.rules {
        let to = match rules.as_slice() {
            [] => continue,
            [only] if only.conds.is_empty() => rets.get(&mut a, only.action),
            list => *block_of.entry(list).or_insert_with(|| {
                let l = a.label();
                blocks.push((list, l));
                l
            }),
        };
        entries.push((nr, to));
    }
    dispatch(&mut a, entries, default)?;

    for (rules, label) in blocks {
        a.bind(label);
        for (r, rule) in rules.iter().enumerate() {
            let pass = rets.get(&mut a, rule.action);
            if rule.conds.is_empty() {
                a.ja(pass);
                break;
            }
            let last = r + 1 == rules.len();
            let fail = if last { default } else { a.label() };
            for (c, cond) in rule.conds.iter().enumerate() {
                let on_pass = if c + 1 == rule.conds.len() { To(pass) } else { Next };
                emit_cond(&mut a, cond, on_pass, To(fail));
            }
            if !last {
                a.bind(fail);
            }
        }
    }
    rets.emit(&mut a);
    a.finish()
}

/// Jump to `pass` when the 64-bit comparison holds, else to `fail`: high words first, the low
/// words decide only when the high ones are equal.
fn emit_cond(a: &mut Asm, c: &Cond, pass: Target, fail: Target) {
    let end = a.label();
    let resolve = |t: Target| if t == Next { To(end) } else { t };
    let (p, f) = (resolve(pass), resolve(fail));
    let (lo_off, hi_off) = arg_words(c.arg);
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    match c.op {
        Op::Eq | Op::Ne => {
            let (eq, ne) = if c.op == Op::Eq { (p, f) } else { (f, p) };
            a.load(hi_off);
            a.jump(Cmp::Eq, hi, Next, ne);
            a.load(lo_off);
            a.jump(Cmp::Eq, lo, eq, ne);
        }
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            // Gt and Ge as written; Lt is "not Ge", Le is "not Gt".
            let (yes, no) = if matches!(c.op, Op::Gt | Op::Ge) { (p, f) } else { (f, p) };
            let low_cmp = if matches!(c.op, Op::Gt | Op::Le) { Cmp::Gt } else { Cmp::Ge };
            a.load(hi_off);
            a.jump(Cmp::Gt, hi, yes, Next);
            if hi != 0 {
                // Not greater, and 0 cannot be less: only then is equality worth a test.
                a.jump(Cmp::Eq, hi, Next, no);
            }
            a.load(lo_off);
            a.jump(low_cmp, lo, yes, no);
        }
        Op::MaskedEq(mask) => {
            let (mhi, mlo) = ((mask >> 32) as u32, mask as u32);
            for (i, (off, m, v)) in [(hi_off, mhi, hi), (lo_off, mlo, lo)].into_iter().enumerate() {
                let on_equal = if i == 0 { Next } else { p };
                if m == 0 {
                    // The word masks to 0: the test is decided without loading it.
                    if v != 0 {
                        a.goto(f);
                        break;
                    }
                    a.goto(on_equal);
                    continue;
                }
                a.load(off);
                if m != u32::MAX {
                    a.and(m);
                }
                a.jump(Cmp::Eq, v, on_equal, f);
            }
        }
    }
    a.bind(end);
}

fn native_arch_named(name: &str) -> bool {
    arch::NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn cap_key(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").map(str::to_owned).unwrap_or(upper)
}

fn parse_profile(json: &[u8], opts: &OciOptions) -> Result<Profile, String> {
    let root: Value = serde_json::from_slice(json).map_err(|e| format!("seccomp profile is not valid JSON: {e}"))?;
    let top = root.as_object().ok_or("seccomp profile: expected a JSON object")?;

    let default_errno = match top.get("defaultErrnoRet") {
        None | Some(Value::Null) => libc::EPERM as u32,
        Some(v) => errno_value(v, "defaultErrnoRet")?,
    };
    let default = match top.get("defaultAction") {
        None | Some(Value::Null) => return Err("defaultAction: missing".into()),
        Some(v) => action(v, default_errno, "defaultAction")?,
    };
    match top.get("architectures") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {}
        Some(_) => return Err("architectures: expected an array of strings".into()),
    }

    let caps: Vec<String> = opts.capabilities.iter().map(|c| cap_key(c)).collect();
    let kernel = opts.kernel.or_else(crate::probe::running_kernel);
    let ctx = Gate { caps: &caps, kernel };

    let mut profile = Profile { default, rules: BTreeMap::new() };
    let syscalls = match top.get("syscalls") {
        None | Some(Value::Null) => return Ok(profile),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("syscalls: expected an array".into()),
    };
    for (i, entry) in syscalls.iter().enumerate() {
        let at = format!("syscalls[{i}]");
        let obj = entry.as_object().ok_or_else(|| format!("{at}: expected an object"))?;
        let names = rule_names(obj, &at)?;
        let errno = match obj.get("errnoRet") {
            None | Some(Value::Null) => libc::EPERM as u32,
            Some(v) => errno_value(v, &format!("{at}.errnoRet"))?,
        };
        let act = match obj.get("action") {
            None | Some(Value::Null) => return Err(format!("{at}.action: missing")),
            Some(v) => action(v, errno, &format!("{at}.action"))?,
        };
        let conds = match obj.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(args)) => args.iter().enumerate().map(|(j, arg)| condition(arg, &format!("{at}.args[{j}]"))).collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("{at}.args: expected an array")),
        };
        if !ctx.applies(obj, &at)? {
            continue;
        }
        let rule = Rule { conds, action: act };
        for name in names {
            let Some(nr) = syscall_number(name) else { continue };
            let list = profile.rules.entry(nr).or_default();
            // After an unconditional rule, later ones for the same syscall can never match.
            if !list.last().is_some_and(|r| r.conds.is_empty()) {
                list.push(rule.clone());
            }
        }
    }
    // Trailing rules that return the default action change nothing.
    for list in profile.rules.values_mut() {
        while list.last().is_some_and(|r| r.action == default) {
            list.pop();
        }
    }
    profile.rules.retain(|_, list| !list.is_empty());
    Ok(profile)
}

fn rule_names<'a>(obj: &'a Map<String, Value>, at: &str) -> Result<Vec<&'a str>, String> {
    let mut names = Vec::new();
    match obj.get("names") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (j, n) in list.iter().enumerate() {
                let n = n.as_str().ok_or_else(|| format!("{at}.names[{j}]: expected a string"))?;
                names.push(known_name(n, || format!("{at}.names[{j}]"))?);
            }
        }
        Some(_) => return Err(format!("{at}.names: expected an array of strings")),
    }
    match obj.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(n)) => names.push(known_name(n, || format!("{at}.name"))?),
        Some(_) => return Err(format!("{at}.name: expected a string")),
    }
    if names.is_empty() && !obj.contains_key("names") {
        return Err(format!("{at}.names: missing"));
    }
    Ok(names)
}

/// A name this architecture has, or another one has (skipped later, as libseccomp does); a name
/// no architecture has would be dropped from the filter as silently, so it is refused, with the
/// nearest real name when one is close.
fn known_name(name: &str, at: impl FnOnce() -> String) -> Result<&str, String> {
    if syscall_number(name).is_some() || crate::syscall_names::is_linux_syscall(name) {
        return Ok(name);
    }
    let guess = nearest_syscall_name(name).map(|n| format!(" (did you mean \"{n}\"?)")).unwrap_or_default();
    Err(format!(
        "{}: \"{}\" is no system call of any architecture libseccomp knows{guess}; names of other architectures are skipped, and names run up to Linux 7.1's rseq_slice_yield",
        at(),
        cut(name, 64).escape_debug()
    ))
}

fn cut(s: &str, most: usize) -> String {
    match s.char_indices().nth(most) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The closest real name by edit distance, when within two edits (or a change of case).
fn nearest_syscall_name(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for &candidate in crate::syscall_names::LINUX_SYSCALL_NAMES {
        let d = edit_distance(&lower, candidate);
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, n)| n)
}

/// Levenshtein distance over bytes; lengths more than two apart count as 3 (only small distances
/// make a guess).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 2 {
        return 3;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn action(v: &Value, errno: u32, at: &str) -> Result<u32, String> {
    let name = v.as_str().ok_or_else(|| format!("{at}: expected a string"))?;
    Ok(match name {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => libc::SECCOMP_RET_ERRNO | errno,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => libc::SECCOMP_RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => libc::SECCOMP_RET_TRAP,
        "SCMP_ACT_LOG" => libc::SECCOMP_RET_LOG,
        // No tracer is ever attached; the kernel would answer ENOSYS itself.
        "SCMP_ACT_TRACE" => ret_errno(libc::ENOSYS),
        "SCMP_ACT_NOTIFY" => return Err(format!("{at}: action \"{name}\" is not supported (no seccomp agent)")),
        _ => return Err(format!("{at}: unknown action \"{name}\"")),
    })
}

fn errno_value(v: &Value, at: &str) -> Result<u32, String> {
    match v.as_u64() {
        Some(n) if n <= u64::from(libc::SECCOMP_RET_DATA) => Ok(n as u32),
        _ => Err(format!("{at}: expected an errno number from 0 to 65535")),
    }
}

fn condition(v: &Value, at: &str) -> Result<Cond, String> {
    let obj = v.as_object().ok_or_else(|| format!("{at}: expected an object"))?;
    let index = match obj.get("index").map(Value::as_u64) {
        Some(Some(i)) if i < 6 => i as u8,
        None => return Err(format!("{at}.index: missing")),
        _ => return Err(format!("{at}.index: expected an argument index from 0 to 5")),
    };
    let number = |key: &str| -> Result<u64, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| format!("{at}.{key}: expected an unsigned 64-bit integer")),
        }
    };
    let (value, value_two) = (number("value")?, number("valueTwo")?);
    let op = match obj.get("op") {
        None | Some(Value::Null) => return Err(format!("{at}.op: missing")),
        Some(v) => v.as_str().ok_or_else(|| format!("{at}.op: expected a string"))?,
    };
    let (op, value) = match op {
        "SCMP_CMP_NE" => (Op::Ne, value),
        "SCMP_CMP_LT" => (Op::Lt, value),
        "SCMP_CMP_LE" => (Op::Le, value),
        "SCMP_CMP_EQ" => (Op::Eq, value),
        "SCMP_CMP_GE" => (Op::Ge, value),
        "SCMP_CMP_GT" => (Op::Gt, value),
        // As runc hands it to libseccomp: value is the mask, valueTwo the expected result.
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq(value), value_two),
        other => return Err(format!("{at}.op: unknown operator \"{other}\"")),
    };
    Ok(Cond { arg: index, op, value })
}

/// Docker's rule gates: `includes` must all hold, `excludes` must not.
struct Gate<'a> {
    caps: &'a [String],
    kernel: Option<(u32, u32)>,
}

impl Gate<'_> {
    fn applies(&self, rule: &Map<String, Value>, at: &str) -> Result<bool, String> {
        let mut ok = true;
        for (key, include) in [("includes", true), ("excludes", false)] {
            let filter = match rule.get(key) {
                None | Some(Value::Null) => continue,
                Some(Value::Object(f)) => f,
                Some(_) => return Err(format!("{at}.{key}: expected an object")),
            };
            let at = format!("{at}.{key}");
            let strings = |field: &str| -> Result<Vec<&str>, String> {
                match filter.get(field) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(l)) => l.iter().map(|s| s.as_str().ok_or_else(|| format!("{at}.{field}: expected an array of strings"))).collect(),
                    Some(_) => Err(format!("{at}.{field}: expected an array of strings")),
                }
            };
            let arches = strings("arches")?;
            let caps = strings("caps")?;
            let has_cap = |c: &&str| self.caps.contains(&cap_key(c));
            let min_kernel = match filter.get("minKernel") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => {
                    Some(crate::probe::parse_kernel_version(s).ok_or_else(|| format!("{at}.minKernel: expected a version like \"4.8\""))?)
                }
                Some(_) => return Err(format!("{at}.minKernel: expected a string")),
            };
            // An unknown running kernel counts as too old.
            let kernel_ok = min_kernel.map(|min| self.kernel.is_some_and(|k| k >= min));
            if include {
                ok &= arches.is_empty() || arches.iter().any(|a| native_arch_named(a));
                ok &= caps.iter().all(has_cap);
                ok &= kernel_ok.unwrap_or(true);
            } else {
                ok &= !arches.iter().any(|a| native_arch_named(a));
                ok &= !caps.iter().any(has_cap);
                ok &= !kernel_ok.unwrap_or(false);
            }
        }
        Ok(ok)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Install `program` on the calling thread (and what it execs and forks): seccomp(2), or
/// prctl(PR_SET_SECCOMP) on kernels without it. no_new_privs must already be set (or the caller
/// hold CAP_SYS_ADMIN). Allocates nothing: safe between fork and execve.
pub fn load(program: &Program) -> Result<(), SetupError> {
    let step = Step::LoadSeccomp;
    if program.is_empty() || program.len() > MAX_INSNS {
        return Err(SetupError::sys(step, libc::EINVAL, None));
    }
    let prog = libc::sock_fprog { len: program.len() as libc::c_ushort, filter: program.filter.as_ptr() as *mut sock_filter };
    // SAFETY: prog points at the program's instructions, alive for the call; the kernel copies them.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong, 0 as libc::c_ulong, &prog as *const libc::sock_fprog) };
    if rc == 0 {
        return Ok(());
    }
    let mut errno = nix::errno::Errno::last_raw();
    if errno == libc::ENOSYS {
        // SAFETY: as above; prctl's variadic arguments are unsigned longs.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        errno = nix::errno::Errno::last_raw();
    }
    let err = SetupError::sys(step, errno, None);
    Err(match errno {
        libc::EACCES => err.with_hint("set no_new_privs before loading the seccomp filter (or hold CAP_SYS_ADMIN)"),
        libc::EINVAL => err.with_hint("the kernel rejected the seccomp filter (SECCOMP_RET_KILL_PROCESS needs Linux 4.14)"),
        libc::ENOMEM => err.with_hint("the seccomp filter is too large for the filters already installed on this process"),
        _ => err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    // ----- a classic BPF interpreter, as the kernel runs a seccomp filter -------------------

    fn data(nr: u32, args: [u64; 6]) -> libc::seccomp_data {
        // SAFETY: plain integers.
        let mut d: libc::seccomp_data = unsafe { std::mem::zeroed() };
        d.nr = nr as i32;
        d.arch = arch::AUDIT_ARCH;
        d.args = args;
        d
    }

    /// Checks what the kernel's checker checks, then runs the program on `d`.
    fn run(p: &Program, d: &libc::seccomp_data) -> u32 {
        let insns = p.instructions();
        assert!(!insns.is_empty() && insns.len() <= MAX_INSNS);
        assert_eq!(insns.last().unwrap().code, RET_K, "must end in ret");
        // SAFETY: seccomp_data is 64 bytes of plain integers.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(d as *const _ as *const u8, std::mem::size_of::<libc::seccomp_data>()) };
        let (mut acc, mut pc, mut steps) = (0u32, 0usize, 0);
        loop {
            steps += 1;
            assert!(steps <= insns.len(), "a seccomp filter cannot loop");
            let i = insns[pc];
            pc += 1;
            let jump = |cond: bool| pc + if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                LD_ABS => {
                    let k = i.k as usize;
                    assert!(k & 3 == 0 && k + 4 <= bytes.len(), "load out of seccomp_data at {k}");
                    acc = u32::from_ne_bytes(bytes[k..k + 4].try_into().unwrap());
                }
                AND_K => acc &= i.k,
                JA => pc += i.k as usize,
                JEQ_K => pc = jump(acc == i.k),
                JGT_K => pc = jump(acc > i.k),
                JGE_K => pc = jump(acc >= i.k),
                JSET_K => pc = jump(acc & i.k != 0),
                RET_K => return i.k,
                c => panic!("instruction {c:#x} not allowed in seccomp"),
            }
            assert!(pc < insns.len(), "jump past the end");
        }
    }

    fn eval(p: &Program, nr: u32, args: [u64; 6]) -> u32 {
        run(p, &data(nr, args))
    }

    fn nr(name: &str) -> u32 {
        syscall_number(name).unwrap_or_else(|| panic!("{name} not in the table"))
    }

    const EPERM: u32 = ret_errno(libc::EPERM);
    const ENOSYS: u32 = ret_errno(libc::ENOSYS);
    const EAFNOSUPPORT: u32 = ret_errno(libc::EAFNOSUPPORT);

    // ----- the syscall table ---------------------------------------------------------------

    #[test]
    fn table_resolves_names_and_numbers_are_unique() {
        assert_eq!(syscall_number("read"), Some(libc::SYS_read as u32));
        assert_eq!(syscall_number("_sysctl").is_some(), cfg!(target_arch = "x86_64"));
        assert_eq!(syscall_number("fchmodat2"), Some(452));
        assert_eq!(syscall_number("no_such_call"), None);
        assert!(syscall_table().len() >= 300, "{}", syscall_table().len());
        let mut seen = HashMap::new();
        for (name, nr) in syscall_table() {
            if let Some(other) = seen.insert(*nr, *name) {
                panic!("{name} and {other} both have number {nr}");
            }
        }
        // An extra that libc also knows must agree with libc.
        for (name, nr) in arch::EXTRA.iter().chain(NEWER_SYSCALLS) {
            assert_eq!(syscall_number(name), Some(*nr), "{name}");
        }
    }

    #[test]
    fn every_default_denied_name_exists_unless_not_on_this_arch() {
        #[cfg(target_arch = "x86_64")]
        let absent: &[&str] = &["vm86", "vm86old"];
        #[cfg(target_arch = "aarch64")]
        let absent: &[&str] =
            &["vm86", "vm86old", "iopl", "ioperm", "uselib", "ustat", "sysfs", "_sysctl", "create_module", "get_kernel_syms", "query_module", "modify_ldt"];
        for name in DEFAULT_EPERM {
            assert_eq!(syscall_number(name).is_none(), absent.contains(name), "{name}");
        }
    }

    // ----- the assembler --------------------------------------------------------------------

    #[test]
    fn far_jumps_get_trampolines() {
        // jeq with both targets more than 255 instructions away, a fall-through that must skip
        // the trampolines, and a second jump whose near target becomes far once they exist.
        let mut a = Asm::default();
        let (t, f) = (a.label(), a.label());
        a.load(OFF_NR);
        a.jump(Cmp::Eq, 1, To(t), Next);
        a.jump(Cmp::Eq, 2, To(t), To(f));
        for _ in 0..300 {
            a.ret(7);
        }
        a.bind(t);
        a.ret(100);
        for _ in 0..300 {
            a.ret(8);
        }
        a.bind(f);
        a.ret(200);
        let p = a.finish().unwrap();
        assert_eq!(eval(&p, 1, [0; 6]), 100);
        assert_eq!(eval(&p, 2, [0; 6]), 100);
        assert_eq!(eval(&p, 3, [0; 6]), 200);
        assert!(p.len() > 600);
    }

    #[test]
    fn assembler_rejects_backward_and_unbound_labels() {
        let mut a = Asm::default();
        let l = a.label();
        a.bind(l);
        a.load(OFF_NR);
        a.ja(l);
        assert!(a.finish().unwrap_err().contains("backward"));

        let mut a = Asm::default();
        let l = a.label();
        a.ja(l);
        a.ret(0);
        assert!(a.finish().unwrap_err().contains("never bound"));
    }

    #[test]
    fn dispatch_matches_a_table_lookup_for_every_number() {
        // Runs of one outcome, isolated numbers, neighbours with different outcomes, number 0.
        let mut a = Asm::default();
        let mut rets = Rets::default();
        let outcomes: Vec<Label> = (0..5).map(|k| rets.get(&mut a, 1000 + k)).collect();
        let mut expect = HashMap::new();
        let mut x: u32 = 12345;
        for nr in (0u32..700).chain([1000, 1001, 5000, 0x3fff_ffff]) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (x >> 16) % 3 == 1 || nr < 3 {
                let k = (x >> 20) % 5;
                expect.insert(nr, 1000 + k);
            }
        }
        let default = rets.get(&mut a, 9);
        a.load(OFF_NR);
        let entries = expect.iter().map(|(&nr, &k)| (nr, outcomes[(k - 1000) as usize])).collect();
        dispatch(&mut a, entries, default).unwrap();
        rets.emit(&mut a);
        let p = a.finish().unwrap();
        for nr in (0u32..1100).chain([4999, 5000, 5001, 0x3fff_fffe, 0x3fff_ffff, 0x4000_0000, u32::MAX]) {
            assert_eq!(eval(&p, nr, [0; 6]), expect.get(&nr).copied().unwrap_or(9), "nr {nr}");
        }
    }

    // ----- the default program --------------------------------------------------------------

    #[test]
    fn default_program_is_small() {
        let p = default_program();
        eprintln!("default program: {} instructions", p.len());
        // 116 before the rule that keeps RLIMIT_CORE at 1 byte (9 more).
        assert!(p.len() < 128, "{p:#?}");
    }

    #[test]
    fn default_kills_foreign_arch_and_x32() {
        let p = default_program();
        let mut d = data(libc::SYS_getpid as u32, [0; 6]);
        d.arch = 0x4000_0003; // AUDIT_ARCH_I386
        assert_eq!(run(&p, &d), RET_KILL_PROCESS);
        d.arch = 0x4000_0028; // AUDIT_ARCH_ARM
        assert_eq!(run(&p, &d), RET_KILL_PROCESS);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(eval(&p, 0x4000_0000 | libc::SYS_getpid as u32, [0; 6]), RET_KILL_PROCESS);
            assert_eq!(eval(&p, 0x4000_0000, [0; 6]), RET_KILL_PROCESS);
            assert_eq!(eval(&p, u32::MAX, [0; 6]), RET_KILL_PROCESS);
        }
    }

    #[test]
    fn default_decides_every_syscall_number_as_specified() {
        let p = default_program();
        let denied: HashSet<u32> = DEFAULT_EPERM.iter().filter_map(|n| syscall_number(n)).collect();
        let mut special: HashSet<u32> = ["clone", "clone3", "personality", "ioctl", "socket", "socketpair", "openat", "openat2", "io_setup"].map(nr).into();
        special.extend(MODE_IN_ARG.iter().map(|(n, _)| *n).chain(["open"]).filter_map(syscall_number));
        for n in 0..1024u32 {
            if special.contains(&n) {
                continue;
            }
            let want = if denied.contains(&n) { EPERM } else { RET_ALLOW };
            assert_eq!(eval(&p, n, [0; 6]), want, "syscall {n}");
        }
        for name in [
            "read",
            "write",
            "execve",
            "execveat",
            "fork",
            "vfork",
            "wait4",
            "mmap",
            "futex",
            "prctl",
            "seccomp",
            "exit_group",
            "rt_sigreturn",
            "pidfd_open",
            "pidfd_send_signal",
        ] {
            if let Some(n) = syscall_number(name) {
                assert_eq!(eval(&p, n, [u64::MAX; 6]), RET_ALLOW, "{name}");
            }
        }
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "fsopen",
            "mount_setattr",
            "bpf",
            "ptrace",
            "keyctl",
            "io_uring_setup",
            "kexec_load",
            "open_by_handle_at",
            "userfaultfd",
            "perf_event_open",
        ] {
            assert_eq!(eval(&p, nr(name), [0; 6]), EPERM, "{name}");
        }
        assert_eq!(eval(&p, nr("clone3"), [0; 6]), ENOSYS);
    }

    #[test]
    fn default_refuses_set_id_bits_in_any_mode_and_nothing_else() {
        let p = default_program();
        let (suid, sgid, creat, tmpfile) = (libc::S_ISUID as u64, libc::S_ISGID as u64, libc::O_CREAT as u64, 0o20200000u64);
        for (name, arg) in MODE_IN_ARG {
            let Some(n) = syscall_number(name) else { continue };
            let with = |mode: u64| {
                let mut args = [0u64; 6];
                args[*arg as usize] = mode;
                eval(&p, n, args)
            };
            assert_eq!(with(0o755), RET_ALLOW, "{name} 755");
            assert_eq!(with(0o4755), EPERM, "{name} 4755");
            assert_eq!(with(0o2775), EPERM, "{name} 2775");
            assert_eq!(with(0o1777), RET_ALLOW, "{name} sticky");
            // High bits set by the caller do not hide them (the kernel reads a umode_t).
            assert_eq!(with(0xffff_ffff_0000_0000 | suid), EPERM, "{name} high bits");
        }
        let openat = nr("openat");
        assert_eq!(eval(&p, openat, [0, 0, creat, 0o644, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&p, openat, [0, 0, creat, 0o4755, 0, 0]), EPERM);
        assert_eq!(eval(&p, openat, [0, 0, tmpfile | 2, sgid | 0o755, 0, 0]), EPERM);
        assert_eq!(eval(&p, openat, [0, 0, 0, 0o4755, 0, 0]), RET_ALLOW, "no mode without O_CREAT: whatever the 4th word holds");
        if let Some(open) = syscall_number("open") {
            assert_eq!(eval(&p, open, [0, creat, 0o6755, 0, 0, 0]), EPERM);
            assert_eq!(eval(&p, open, [0, 2, 0o6755, 0, 0, 0]), RET_ALLOW);
        }
        assert_eq!(eval(&p, nr("openat2"), [0; 6]), ENOSYS);
    }

    #[test]
    fn default_answers_enosys_to_io_setup() {
        // The host's one pool of AIO events; the other io_* calls need a context it makes.
        assert_eq!(eval(&default_program(), nr("io_setup"), [1, 0, 0, 0, 0, 0]), ENOSYS);
    }

    #[test]
    fn default_clone_flags() {
        let p = default_program();
        let clone = nr("clone");
        let sigchld = libc::SIGCHLD as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | sigchld;
        assert_eq!(eval(&p, clone, [thread, 1, 2, 3, 4, 5]), RET_ALLOW);
        assert_eq!(eval(&p, clone, [fork, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&p, clone, [(libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld, 0, 0, 0, 0, 0]), RET_ALLOW);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            0x80,
        ] {
            assert_eq!(eval(&p, clone, [flag as u64 | sigchld, 0, 0, 0, 0, 0]), EPERM, "{flag:#x}");
            assert_eq!(eval(&p, clone, [flag as u64 | thread | (1 << 40), 0, 0, 0, 0, 0]), EPERM, "{flag:#x}");
        }
        // The flags are args[0]: a namespace bit elsewhere changes nothing.
        assert_eq!(eval(&p, clone, [sigchld, libc::CLONE_NEWUSER as u64, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn default_takes_no_lease() {
        let p = default_program();
        let fcntl = nr("fcntl");
        assert_eq!(eval(&p, fcntl, [3, F_SETLEASE as u64, libc::F_WRLCK as u64, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, fcntl, [3, F_SETLEASE as u64, libc::F_RDLCK as u64, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, fcntl, [3, F_SETLEASE as u64 | (1 << 32), 0, 0, 0, 0]), EPERM, "the kernel reads the low word");
        assert_eq!(eval(&p, fcntl, [3, libc::F_GETLEASE as u64, 0, 0, 0, 0]), RET_ALLOW, "asking is harmless");
        assert_eq!(eval(&p, fcntl, [3, libc::F_SETFL as u64, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&p, fcntl, [F_SETLEASE as u64, libc::F_GETFD as u64, 0, 0, 0, 0]), RET_ALLOW, "the fd is not the command");
    }

    #[test]
    fn default_prlimit_sets_no_limit_of_pid_1() {
        let p = default_program();
        let prlimit = nr("prlimit64");
        let new = 0x7ffd_1234_5678u64;
        assert_eq!(eval(&p, prlimit, [1, 7, new, 0, 0, 0]), EPERM, "a new limit for the init");
        assert_eq!(eval(&p, prlimit, [1 | (5 << 32), 7, new, 0, 0, 0]), EPERM, "the kernel reads the pid's low word");
        assert_eq!(eval(&p, prlimit, [1, 7, 1 << 40, 0, 0, 0]), EPERM, "a pointer with only high bits");
        assert_eq!(eval(&p, prlimit, [1, 7, 0, new, 0, 0]), RET_ALLOW, "reading the init's limits");
        assert_eq!(eval(&p, prlimit, [0, 7, new, new, 0, 0]), RET_ALLOW, "its own");
        assert_eq!(eval(&p, prlimit, [2, 7, new, 0, 0, 0]), RET_ALLOW, "another process of the sandbox");
    }

    #[test]
    fn default_keeps_the_core_limit_without_core_dumps() {
        let done = ret_errno(0);
        let (prlimit, setrlimit) = (nr("prlimit64"), nr("setrlimit"));
        let new = 0x7ffd_1234_5678u64;
        let core = RLIMIT_CORE as u64;
        let p = default_program();
        assert_eq!(eval(&p, setrlimit, [core, new, 0, 0, 0, 0]), done, "as if set, not set");
        assert_eq!(eval(&p, setrlimit, [core | (1 << 32), new, 0, 0, 0, 0]), done, "the kernel reads the low word");
        assert_eq!(eval(&p, prlimit, [0, core, new, 0, 0, 0]), done);
        assert_eq!(eval(&p, prlimit, [0, core, 1 << 40, 0, 0, 0]), done, "a pointer with only high bits");
        assert_eq!(eval(&p, prlimit, [1, core, new, 0, 0, 0]), done, "the init's too");
        assert_eq!(eval(&p, prlimit, [0, core, new, new, 0, 0]), EPERM, "the old one asked for too: the filter cannot fill it in");
        assert_eq!(eval(&p, prlimit, [0, core, new, 1 << 40, 0, 0]), EPERM);
        assert_eq!(eval(&p, prlimit, [0, core, 0, new, 0, 0]), RET_ALLOW, "reading it");
        assert_eq!(eval(&p, setrlimit, [7, new, 0, 0, 0, 0]), RET_ALLOW, "another limit");
        assert_eq!(eval(&p, prlimit, [0, 7, new, 0, 0, 0]), RET_ALLOW);
        let dumps = default_program_for(true);
        assert_eq!(eval(&dumps, setrlimit, [core, new, 0, 0, 0, 0]), RET_ALLOW, "its own to change when it has core dumps");
        assert_eq!(eval(&dumps, prlimit, [0, core, new, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&dumps, prlimit, [1, core, new, 0, 0, 0]), EPERM, "but for the init's");
        assert!(!dumps.to_bytes().windows(4).any(|w| w == done.to_le_bytes()), "no return it never takes");
    }

    #[test]
    fn default_ioctl_socket_personality() {
        let p = default_program();
        let ioctl = nr("ioctl");
        assert_eq!(eval(&p, ioctl, [0, TIOCSTI as u64, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, ioctl, [0, TIOCSTI as u64 | (1 << 32), 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, ioctl, [0, TIOCSTI as u64 | 0xffff_ffff_0000_0000, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, ioctl, [0, TIOCLINUX as u64, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, ioctl, [0, TIOCSETD as u64, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, ioctl, [0, TIOCSETD as u64 | (1 << 32), 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, ioctl, [0, 0x5424, 0, 0, 0, 0]), RET_ALLOW); // TIOCGETD
        assert_eq!(eval(&p, ioctl, [0, 0x5401, 0, 0, 0, 0]), RET_ALLOW); // TCGETS
        assert_eq!(eval(&p, ioctl, [0, 0x5413, 0, 0, 0, 0]), RET_ALLOW); // TIOCGWINSZ
        assert_eq!(eval(&p, ioctl, [TIOCSTI as u64, 0x5401, TIOCSTI as u64, 0, 0, 0]), RET_ALLOW);

        for call in ["socket", "socketpair"] {
            let n = nr(call);
            for fam in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK] {
                assert_eq!(eval(&p, n, [fam as u64, 1, 0, 0, 0, 0]), RET_ALLOW, "{call} {fam}");
                assert_eq!(eval(&p, n, [fam as u64 | (7 << 32), 1, 0, 0, 0, 0]), RET_ALLOW, "{call} {fam}");
            }
            for fam in [libc::AF_VSOCK, libc::AF_PACKET, libc::AF_BLUETOOTH, libc::AF_ALG, 0, 1000] {
                assert_eq!(eval(&p, n, [fam as u64, 1, 0, 0, 0, 0]), EAFNOSUPPORT, "{call} {fam}");
            }
            assert_eq!(eval(&p, n, [libc::AF_VSOCK as u64 | (1 << 32), 1, 0, 0, 0, 0]), EAFNOSUPPORT);
        }

        let pers = nr("personality");
        for ok in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff, 0xffff_ffff_ffff_ffff] {
            assert_eq!(eval(&p, pers, [ok, 0, 0, 0, 0, 0]), RET_ALLOW, "{ok:#x}");
        }
        for bad in [0x0040000u64, 0x0400000, 0x0200000, 0x0040008, 1] {
            assert_eq!(eval(&p, pers, [bad, 0, 0, 0, 0, 0]), EPERM, "{bad:#x}");
        }
    }

    // ----- OCI profiles ---------------------------------------------------------------------

    fn oci(json: &str) -> Program {
        compile_oci(json.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{json}"))
    }

    fn oci_err(json: &str) -> String {
        compile_oci(json.as_bytes()).map(|p| format!("compiled to {p:?}")).unwrap_err()
    }

    const EDGES: &[u64] = &[
        0,
        1,
        2,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fffe,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        0x1_ffff_ffff,
        0x2_0000_0000,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        0xffff_ffff_0000_0000,
        0xffff_ffff_0000_0001,
        0xffff_fffe_ffff_ffff,
        0xffff_ffff_ffff_fffe,
        u64::MAX,
    ];

    #[test]
    fn oci_comparisons_are_64_bit_unsigned() {
        let read = nr("read");
        type Holds = fn(u64, u64) -> bool;
        let ops: [(&str, Holds); 6] = [
            ("SCMP_CMP_NE", |a, v| a != v),
            ("SCMP_CMP_LT", |a, v| a < v),
            ("SCMP_CMP_LE", |a, v| a <= v),
            ("SCMP_CMP_EQ", |a, v| a == v),
            ("SCMP_CMP_GE", |a, v| a >= v),
            ("SCMP_CMP_GT", |a, v| a > v),
        ];
        for (op, holds) in ops {
            for &v in EDGES {
                let p = oci(&format!(
                    r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":99,"args":[{{"index":2,"value":{v},"op":"{op}"}}]}}]}}"#
                ));
                for &arg in EDGES {
                    let want = if holds(arg, v) { ret_errno(99) } else { RET_ALLOW };
                    assert_eq!(eval(&p, read, [v ^ 1, !v, arg, 0, 0, 0]), want, "{arg:#x} {op} {v:#x}");
                }
            }
        }
    }

    #[test]
    fn oci_masked_eq() {
        let read = nr("read");
        let masks = [0u64, 1, 0xff, 0xffff_ffff, 0xffff_ffff_0000_0000, 0x1_0000_0001, u64::MAX, 0x7e02_0080];
        for &mask in &masks {
            for &value in EDGES.iter().chain(&[0x10u64, 0x1_0000_0000]) {
                let p = oci(&format!(
                    r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{{"index":5,"value":{mask},"valueTwo":{value},"op":"SCMP_CMP_MASKED_EQ"}}]}}]}}"#
                ));
                for &arg in EDGES.iter().chain(&[0x10u64, 0x7e02_0080, 0x1_7e02_0080]) {
                    let want = if arg & mask == value { RET_ALLOW } else { EPERM };
                    assert_eq!(eval(&p, read, [0, 0, 0, 0, 0, arg]), want, "{arg:#x} & {mask:#x} == {value:#x}");
                }
            }
        }
    }

    #[test]
    fn oci_args_in_one_rule_are_anded_and_first_rule_wins() {
        let p = oci(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":13,"syscalls":[
                {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":5,
                 "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":2,"value":100,"op":"SCMP_CMP_GT"}]},
                {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":6,"args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
                {"names":["write","read"],"action":"SCMP_ACT_ALLOW"},
                {"names":["write"],"action":"SCMP_ACT_KILL"},
                {"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":7,"args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]}
            ]}"#);
        let (w, r) = (nr("write"), nr("read"));
        assert_eq!(eval(&p, w, [1, 0, 101, 0, 0, 0]), ret_errno(5));
        assert_eq!(eval(&p, w, [1, 0, 100, 0, 0, 0]), ret_errno(6));
        assert_eq!(eval(&p, w, [2, 0, 101, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&p, r, [0, 0, 0, 0, 0, 0]), RET_ALLOW, "the unconditional rule came first");
        assert_eq!(eval(&p, nr("getpid"), [0; 6]), ret_errno(13));
    }

    #[test]
    fn oci_actions() {
        let p = oci(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_AARCH64"],"syscalls":[
                {"names":["getpid"],"action":"SCMP_ACT_KILL"},
                {"names":["getppid"],"action":"SCMP_ACT_KILL_THREAD"},
                {"names":["getuid"],"action":"SCMP_ACT_KILL_PROCESS"},
                {"names":["getgid"],"action":"SCMP_ACT_TRAP"},
                {"names":["geteuid"],"action":"SCMP_ACT_LOG"},
                {"names":["getegid"],"action":"SCMP_ACT_TRACE"},
                {"names":["gettid"],"action":"SCMP_ACT_ERRNO"},
                {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":0},
                {"name":"uname","action":"SCMP_ACT_ERRNO","errnoRet":38}
            ]}"#);
        let want = [
            ("getpid", libc::SECCOMP_RET_KILL_THREAD),
            ("getppid", libc::SECCOMP_RET_KILL_THREAD),
            ("getuid", RET_KILL_PROCESS),
            ("getgid", libc::SECCOMP_RET_TRAP),
            ("geteuid", libc::SECCOMP_RET_LOG),
            ("getegid", ENOSYS),
            ("gettid", EPERM),
            ("getcwd", libc::SECCOMP_RET_ERRNO),
            ("uname", ENOSYS),
            ("read", RET_ALLOW),
        ];
        for (name, action) in want {
            assert_eq!(eval(&p, nr(name), [0; 6]), action, "{name}");
        }
        let mut d = data(nr("read"), [0; 6]);
        d.arch = 0x4000_0003;
        assert_eq!(run(&p, &d), RET_KILL_PROCESS, "a foreign arch is killed even when listed");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(eval(&p, 0x4000_0000 | nr("read"), [0; 6]), RET_KILL_PROCESS);
        }
        let empty = oci(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        assert_eq!(eval(&empty, nr("mount"), [0; 6]), RET_ALLOW);
        assert!(empty.len() <= 6, "{empty:#?}");
    }

    #[test]
    fn oci_names_of_other_architectures_are_skipped() {
        let p = oci(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["arm_fadvise64_64","read","_llseek","socketcall"],"action":"SCMP_ACT_ALLOW"},
                {"names":["s390_pci_mmio_read"],"action":"SCMP_ACT_ALLOW"},
                {"names":[],"action":"SCMP_ACT_ALLOW"}
            ]}"#);
        assert_eq!(eval(&p, nr("read"), [0; 6]), RET_ALLOW);
        assert_eq!(eval(&p, nr("write"), [0; 6]), EPERM);
    }

    #[test]
    fn oci_names_no_architecture_has_are_refused_with_a_guess() {
        let deny = |names: &str| {
            oci_err(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"],"action":"SCMP_ACT_LOG"}},{{"names":{names},"action":"SCMP_ACT_ERRNO"}}]}}"#
            ))
        };
        let typo = deny(r#"["ptrace","mkdri"]"#);
        assert!(typo.starts_with(r#"syscalls[1].names[1]: "mkdri" is no system call of any architecture libseccomp knows (did you mean "mkdir"?)"#), "{typo}");
        assert!(deny(r#"["PTRACE"]"#).contains(r#"(did you mean "ptrace"?)"#));
        let far = deny(r#"["no_such_syscall"]"#);
        assert!(far.starts_with(r#"syscalls[1].names[0]: "no_such_syscall" is no system call of any architecture libseccomp knows; names of other"#), "{far}");
        let single = oci_err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"opn","action":"SCMP_ACT_ERRNO"}]}"#);
        assert!(single.starts_with(r#"syscalls[0].name: "opn" is no system call of any architecture libseccomp knows (did you mean "open"?)"#), "{single}");
        let long = deny(&format!(r#"["{}"]"#, "x".repeat(5000)));
        assert!(long.len() < 400 && long.contains("xxx…"), "{long}");
    }

    #[test]
    fn every_name_of_this_arch_is_a_linux_name_and_the_list_is_sorted() {
        let all = crate::syscall_names::LINUX_SYSCALL_NAMES;
        assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        for name in syscall_table().keys() {
            assert!(crate::syscall_names::is_linux_syscall(name), "{name} missing from syscall_names");
        }
        assert_eq!(syscall_number("rseq_slice_yield"), Some(471));
    }

    #[test]
    fn oci_errors_name_the_field() {
        assert!(oci_err("{").starts_with("seccomp profile is not valid JSON"), "{}", oci_err("{"));
        assert_eq!(oci_err("[]"), "seccomp profile: expected a JSON object");
        assert_eq!(oci_err("{}"), "defaultAction: missing");
        assert_eq!(oci_err(r#"{"defaultAction":"SCMP_ACT_FOO"}"#), r#"defaultAction: unknown action "SCMP_ACT_FOO""#);
        assert_eq!(oci_err(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":-1}"#), "defaultErrnoRet: expected an errno number from 0 to 65535");
        let rules = r#"{"names":["read"],"action":"SCMP_ACT_ALLOW"},"#.repeat(3);
        assert_eq!(
            oci_err(&format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{rules}{{"names":["write"],"action":"SCMP_ACT_FOO"}}]}}"#)),
            r#"syscalls[3].action: unknown action "SCMP_ACT_FOO""#
        );
        let with_args =
            |args: &str| oci_err(&format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ALLOW","args":{args}}}]}}"#));
        assert_eq!(
            with_args(r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":1,"op":"SCMP_CMP_FOO"}]"#),
            r#"syscalls[0].args[1].op: unknown operator "SCMP_CMP_FOO""#
        );
        assert_eq!(with_args(r#"[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]"#), "syscalls[0].args[0].index: expected an argument index from 0 to 5");
        assert_eq!(with_args(r#"[{"value":1,"op":"SCMP_CMP_EQ"}]"#), "syscalls[0].args[0].index: missing");
        assert_eq!(with_args(r#"[{"index":0,"value":-1,"op":"SCMP_CMP_EQ"}]"#), "syscalls[0].args[0].value: expected an unsigned 64-bit integer");
        assert_eq!(with_args(r#"[{"index":0,"value":1}]"#), "syscalls[0].args[0].op: missing");
        assert_eq!(with_args("{}"), "syscalls[0].args: expected an array");
        assert_eq!(
            oci_err(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":"read","action":"SCMP_ACT_ALLOW"}]}"#),
            "syscalls[0].names: expected an array of strings"
        );
        assert_eq!(oci_err(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#), "syscalls[0].names: missing");
        assert_eq!(oci_err(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"]}]}"#), "syscalls[0].action: missing");
        assert_eq!(
            oci_err(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#),
            "syscalls[0].errnoRet: expected an errno number from 0 to 65535"
        );
        assert!(oci_err(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).contains("not supported"));
    }

    #[test]
    fn oci_includes_and_excludes_resolve_like_docker() {
        let json = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}},
            {"names":["getppid"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","arm64"]}},
            {"names":["gettid"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["amd64","arm64"]}}
        ]}"#;
        let none = compile_oci_with(json, &OciOptions { capabilities: vec![], kernel: Some((6, 1)) }).unwrap();
        let admin = compile_oci_with(json, &OciOptions { capabilities: vec!["sys_admin".into()], kernel: Some((4, 4)) }).unwrap();
        let want = |p: &Program, name: &str| eval(p, nr(name), [0; 6]);
        assert_eq!(want(&none, "mount"), EPERM);
        assert_eq!(want(&admin, "mount"), RET_ALLOW);
        assert_eq!(want(&none, "read"), RET_ALLOW);
        assert_eq!(want(&admin, "read"), EPERM);
        assert_eq!(want(&none, "ptrace"), RET_ALLOW);
        assert_eq!(want(&admin, "ptrace"), EPERM, "kernel 4.4 is older than minKernel");
        assert_eq!(want(&none, "getpid"), EPERM);
        assert_eq!(want(&none, "getppid"), RET_ALLOW);
        assert_eq!(want(&none, "gettid"), EPERM);
    }

    #[test]
    fn oci_big_conditional_profile_needs_far_jumps() {
        // 250 syscalls with distinct argument rules: the blocks alone exceed 255 instructions.
        let names: Vec<(&str, u32)> = {
            let mut v: Vec<_> = syscall_table().iter().map(|(n, nr)| (*n, *nr)).collect();
            v.sort_by_key(|e| e.1);
            v.into_iter().take(250).collect()
        };
        let rules: Vec<String> = names
            .iter()
            .map(|(n, nr)| {
                format!(r#"{{"names":["{n}"],"action":"SCMP_ACT_ALLOW","args":[{{"index":1,"value":{},"op":"SCMP_CMP_EQ"}}]}}"#, u64::from(*nr) << 20 | 1)
            })
            .collect();
        let p = oci(&format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#, rules.join(",")));
        assert!(p.len() > 1000, "{}", p.len());
        for (_, n) in &names {
            assert_eq!(eval(&p, *n, [0, u64::from(*n) << 20 | 1, 0, 0, 0, 0]), RET_ALLOW, "{n}");
            assert_eq!(eval(&p, *n, [0, u64::from(*n), 0, 0, 0, 0]), EPERM, "{n}");
        }
    }

    const DOCKER_LIKE: &[u8] = include_bytes!("../tests/fixtures/seccomp/docker-like.json");

    #[test]
    fn docker_like_profile_compiles_and_decides() {
        let p = compile_oci(DOCKER_LIKE).unwrap();
        let names = serde_json::from_slice::<Value>(DOCKER_LIKE).unwrap()["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["names"].as_array().unwrap().len())
            .sum::<usize>();
        eprintln!("docker-like profile: {names} names, {} instructions", p.len());
        assert!(names >= 300, "{names}");
        assert!(p.len() < 200, "{p:#?}");
        for name in ["read", "write", "openat", "execve", "mmap", "futex", "wait4", "rt_sigreturn", "exit_group"] {
            assert_eq!(eval(&p, nr(name), [0; 6]), RET_ALLOW, "{name}");
        }
        for name in ["mount", "unshare", "setns", "bpf", "ptrace", "kexec_load", "open_by_handle_at", "pivot_root"] {
            assert_eq!(eval(&p, nr(name), [0; 6]), EPERM, "{name}");
        }
        assert_eq!(eval(&p, nr("clone3"), [0; 6]), ENOSYS);
        let clone = nr("clone");
        assert_eq!(eval(&p, clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&p, clone, [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0]), EPERM);
        let socket = nr("socket");
        assert_eq!(eval(&p, socket, [libc::AF_INET as u64, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&p, socket, [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]), EPERM);
        let ioctl = nr("ioctl");
        assert_eq!(eval(&p, ioctl, [0, TIOCSTI as u64 | (1 << 32), 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, ioctl, [0, 0x5413, 0, 0, 0, 0]), RET_ALLOW);
        let pers = nr("personality");
        assert_eq!(eval(&p, pers, [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&p, pers, [0x0040000, 0, 0, 0, 0, 0]), EPERM);
    }

    // ----- the real kernel ------------------------------------------------------------------

    fn errno() -> i64 {
        nix::errno::Errno::last_raw() as i64
    }

    /// `rc` as 0 on success, else the errno.
    fn outcome(rc: i64) -> i64 {
        if rc < 0 {
            errno()
        } else {
            0
        }
    }

    /// Fork; the child sets no_new_privs, loads `program` (if any) and runs `body`, whose numbers
    /// come back through a pipe. Returns the child's wait status and those numbers.
    fn in_child(program: Option<&Program>, body: impl FnOnce() -> Vec<i64>) -> (i32, Vec<i64>) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child only runs `body` and _exits; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::sys::set_no_new_privs().expect("no_new_privs");
                if let Some(p) = program {
                    load(p).expect("load");
                }
                body()
            }));
            let code = match out {
                Ok(values) => {
                    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
                    // SAFETY: writing our own buffer to our pipe.
                    unsafe { libc::write(fds[1], bytes.as_ptr().cast(), bytes.len()) };
                    0
                }
                Err(_) => 101,
            };
            // SAFETY: leave without running the harness's destructors.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: closing our copy of the write end; reading into a buffer we own.
        unsafe { libc::close(fds[1]) };
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n as usize]);
        }
        unsafe { libc::close(fds[0]) };
        let mut status = 0;
        // SAFETY: reaping our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let values = bytes.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap())).collect();
        (status, values)
    }

    fn exited_ok(status: i32) -> bool {
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    fn killed_by(status: i32) -> Option<i32> {
        libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
    }

    /// What the default profile must refuse, and what must keep working, on the real kernel.
    fn probe_default() -> Vec<i64> {
        let mut out = Vec::new();
        // SAFETY (whole body): raw syscalls with valid or deliberately invalid arguments; a
        // clone or fork that the filter wrongly allowed _exits at once in the child.
        unsafe {
            out.push(outcome(libc::unshare(libc::CLONE_NEWUSER) as i64));
            out.push(outcome(libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as i64));
            out.push(outcome(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize)));
            out.push(outcome(libc::personality(0x0040000) as i64));
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(master >= 0);
            let ch: u8 = b'x';
            out.push(outcome(libc::ioctl(master, libc::TIOCSTI, &ch) as i64));
            out.push(outcome(libc::syscall(libc::SYS_ioctl, master, (1u64 << 32) | TIOCSTI as u64, &ch)));
            // N_TTY, what the pty already has: harmless if the filter wrongly lets it through.
            let n_tty: libc::c_int = 0;
            out.push(outcome(libc::ioctl(master, libc::TIOCSETD, &n_tty) as i64));
            let mut ws: libc::winsize = std::mem::zeroed();
            out.push(outcome(libc::ioctl(master, libc::TIOCGWINSZ, &mut ws) as i64));
            out.push(outcome(libc::mount(c"none".as_ptr(), c"/".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) as i64));
            let rc = libc::syscall(libc::SYS_clone, (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0u64, 0u64, 0u64, 0u64);
            if rc == 0 {
                libc::_exit(0);
            }
            out.push(outcome(rc));
            // What must keep working: fork, a thread, socketpair(AF_UNIX), an inet socket.
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(7);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            out.push(if pid > 0 && libc::WIFEXITED(status) { libc::WEXITSTATUS(status) as i64 } else { -1 });
            out.push(std::thread::spawn(|| 42i64).join().unwrap_or(-1));
            let mut sv = [0; 2];
            out.push(outcome(libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) as i64));
            out.push(outcome(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) as i64));
            out.push(outcome(libc::personality(0xffff_ffff) as i64));
        }
        out
    }

    #[test]
    fn default_program_on_the_real_kernel() {
        let p = default_program();
        let (status, got) = in_child(Some(&p), probe_default);
        assert!(exited_ok(status), "child status {status:#x}");
        let e = |v: i32| v as i64;
        let want = vec![
            e(libc::EPERM),        // unshare(CLONE_NEWUSER)
            e(libc::EAFNOSUPPORT), // socket(AF_VSOCK)
            e(libc::ENOSYS),       // clone3
            e(libc::EPERM),        // personality(ADDR_NO_RANDOMIZE)
            e(libc::EPERM),        // ioctl(TIOCSTI)
            e(libc::EPERM),        // ioctl(TIOCSTI | 1 << 32)
            e(libc::EPERM),        // ioctl(TIOCSETD, N_TTY)
            0,                     // ioctl(TIOCGWINSZ)
            e(libc::EPERM),        // mount
            e(libc::EPERM),        // clone(CLONE_NEWUSER)
            7,                     // fork, child exit code
            42,                    // thread
            0,                     // socketpair(AF_UNIX)
            0,                     // socket(AF_INET)
            0,                     // personality query
        ];
        assert_eq!(got, want);

        // Without the filter the kernel answers for itself: the filter is what refused above.
        let (status, plain) = in_child(None, probe_default);
        assert!(exited_ok(status));
        assert_eq!(plain[2], e(libc::EINVAL), "clone3 exists and rejects a zero size without the filter");
        assert_eq!(plain[6], 0, "TIOCSETD needs no privilege without the filter");
        if plain[0] == e(libc::EPERM) {
            eprintln!("note: this host refuses new user namespaces even without the filter");
        }
    }

    #[test]
    fn default_program_kills_x32_and_int80_on_the_real_kernel() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let p = default_program();
        let (status, _) = in_child(Some(&p), || {
            // SAFETY: an x32 getpid; the filter kills before the kernel looks at it.
            vec![unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) }]
        });
        assert_eq!(killed_by(status), Some(libc::SIGSYS), "status {status:#x}");

        #[cfg(target_arch = "x86_64")]
        fn int80_getpid() -> i64 {
            let mut rax: i64 = 20; // __NR_getpid in the i386 table
                                   // SAFETY: the i386 getpid through int 0x80 takes no arguments and touches no memory.
            unsafe {
                std::arch::asm!("int 0x80", inout("rax") rax, out("r8") _, out("r9") _, out("r10") _, out("r11") _, options(nostack));
            }
            rax
        }
        #[cfg(not(target_arch = "x86_64"))]
        fn int80_getpid() -> i64 {
            unreachable!()
        }
        let (control, _) = in_child(None, || vec![int80_getpid()]);
        if !exited_ok(control) {
            eprintln!("skipping int 0x80: this kernel has no IA-32 emulation (status {control:#x})");
            return;
        }
        let (status, _) = in_child(Some(&p), || vec![int80_getpid()]);
        assert_eq!(killed_by(status), Some(libc::SIGSYS), "status {status:#x}");
    }

    /// Fork, load `program` after no_new_privs, exec `argv` with stdout into a pipe.
    fn exec_under(program: &Program, argv: &[&str]) -> (i32, String) {
        let args: Vec<std::ffi::CString> = argv.iter().map(|a| std::ffi::CString::new(*a).unwrap()).collect();
        let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let env = [c"PATH=/usr/local/bin:/usr/bin:/bin".as_ptr(), c"HOME=/tmp".as_ptr(), std::ptr::null()];
        let mut fds = [0; 2];
        // SAFETY: as in in_child; the child only dup2s, loads and execs.
        unsafe {
            assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
            let pid = libc::fork();
            if pid == 0 {
                libc::dup2(fds[1], 1);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) != 0
                    || load(program).is_err()
                {
                    libc::_exit(98);
                }
                libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr());
                libc::_exit(127);
            }
            libc::close(fds[1]);
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
            libc::close(fds[0]);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            (status, String::from_utf8_lossy(&out).into_owned())
        }
    }

    const SHELL_WORK: &str = "grep -q '^Seccomp:.*2' /proc/self/status && (sleep 0 & wait) && \
        x=$(echo sub) && cd /tmp && ls / >/dev/null && echo ok";

    fn ordinary_programs(p: &Program) {
        let (status, out) = exec_under(p, &["/bin/sh", "-c", SHELL_WORK]);
        assert!(exited_ok(status) && out == "ok\n", "sh: status {status:#x} output {out:?}");
        for (path, argv) in [
            ("/usr/bin/python3", &["/usr/bin/python3", "-c", "import threading, subprocess, socket; t = threading.Thread(target=print, args=('ok',)); t.start(); t.join(); subprocess.run(['true'], check=True); socket.socketpair()"][..]),
            ("/usr/bin/node", &["/usr/bin/node", "-e", "const {Worker}=require('worker_threads'); require('fs').readFileSync('/etc/hostname'); require('child_process').execFileSync('true'); new Worker('process.exit(0)',{eval:true}).on('exit',()=>console.log('ok'))"][..]),
        ] {
            if !std::path::Path::new(path).exists() {
                eprintln!("{path} not on this host; skipped");
                continue;
            }
            let (status, out) = exec_under(p, argv);
            assert!(exited_ok(status) && out == "ok\n", "{path}: status {status:#x} output {out:?}");
        }
    }

    #[test]
    fn default_program_runs_ordinary_programs() {
        ordinary_programs(&default_program());
    }

    #[test]
    fn docker_like_profile_runs_ordinary_programs() {
        let p = compile_oci(DOCKER_LIKE).unwrap();
        ordinary_programs(&p);
        let (status, got) = in_child(Some(&p), || unsafe {
            // SAFETY: syscalls the profile must refuse, with harmless arguments.
            vec![
                outcome(libc::unshare(libc::CLONE_NEWUSER) as i64),
                outcome(libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as i64),
                outcome(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize)),
                outcome(libc::syscall(libc::SYS_acct, std::ptr::null::<u8>())),
            ]
        });
        assert!(exited_ok(status));
        assert_eq!(got, vec![libc::EPERM as i64, libc::EPERM as i64, libc::ENOSYS as i64, libc::EPERM as i64]);
    }

    #[test]
    fn load_without_no_new_privs_as_unprivileged_fails_with_eacces() {
        // CAP_SYS_ADMIN makes no_new_privs unnecessary, so root drops to nobody first.
        let p = default_program();
        // SAFETY: a forked child that changes its own ids and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = unsafe {
                let root = libc::geteuid() == 0;
                if root && (libc::setresgid(65534, 65534, 65534) != 0 || libc::setresuid(65534, 65534, 65534) != 0) {
                    3
                } else {
                    match load(&p) {
                        Err(e) if e.errno.as_deref() == Some("EACCES") && e.hint.is_some() => 0,
                        Err(_) => 1,
                        Ok(()) => 2,
                    }
                }
            };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3 {
            eprintln!("skipped: root could not become nobody");
            return;
        }
        assert!(exited_ok(status), "status {status:#x}");
    }

    /// Not an assertion: prints how long install takes (compile in the parent, load in a child).
    #[test]
    fn install_time() {
        fn now_ns() -> i64 {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: fills our timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            ts.tv_sec * 1_000_000_000 + ts.tv_nsec
        }
        let t = now_ns();
        let default = default_program();
        let compile_default = now_ns() - t;
        let t = now_ns();
        let docker = compile_oci(DOCKER_LIKE).unwrap();
        let compile_docker = now_ns() - t;
        for (name, p, compile) in [("default", &default, compile_default), ("docker-like", &docker, compile_docker)] {
            let mut loads: Vec<i64> = (0..15)
                .map(|_| {
                    let (status, v) = in_child(None, || {
                        crate::sys::set_no_new_privs().unwrap();
                        let t = now_ns();
                        load(p).unwrap();
                        vec![now_ns() - t]
                    });
                    assert!(exited_ok(status));
                    v[0]
                })
                .collect();
            loads.sort();
            eprintln!(
                "{name}: {} instructions, compile {} us, load median {} us (min {} us)",
                p.len(),
                compile / 1000,
                loads[loads.len() / 2] / 1000,
                loads[0] / 1000
            );
        }
    }
}
