//! What each thread kind may call: the allow lists, as data
//! (docs/security.md explains each list).
//!
//! A list is `(system call, When)` pairs: a call not in its thread's list,
//! or one whose arguments do not match, is a violation. The lists are built
//! from the groups below so the reason for each entry sits next to it; the
//! tests check that no list names a call twice, that the virtio worker's
//! list fits inside the API's (workers attached at runtime start under the
//! API filter and stack their own), and that nothing broad (`execve`,
//! `ptrace`, ...) is anywhere.

use super::ThreadKind;

/// When a listed system call is allowed. Argument comparisons look at the
/// low 32 bits, which is what the kernel reads for every argument compared
/// here (ints, ioctl request numbers, flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum When {
    /// With any arguments.
    Always,
    /// When argument `.0` is one of `.1`.
    ArgIn(u8, Vec<u64>),
    /// When argument `.0` has none of the bits of `.1` set.
    ArgClear(u8, u64),
    /// When argument `.0` has all of the bits of `.1` set.
    ArgSet(u8, u64),
    /// When every listed argument equals its value.
    ArgsEq(Vec<(u8, u64)>),
}

#[cfg(test)]
impl When {
    /// Whether everything `other` allows, `self` allows too (used to check
    /// that one list fits inside another).
    pub(crate) fn covers(&self, other: &When) -> bool {
        match (self, other) {
            (When::Always, _) => true,
            (When::ArgIn(a, mine), When::ArgIn(b, theirs)) => {
                a == b && theirs.iter().all(|v| mine.contains(v))
            }
            (mine, theirs) => mine == theirs,
        }
    }
}

/// One thread kind's allow list.
pub(crate) type Policy = Vec<(i64, When)>;

/// Parameters of the lists that are only known in the running process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessFacts {
    /// This process's id: the control thread may signal its own threads only.
    pub pid: u32,
    /// The signal that kicks vCPU threads out of `KVM_RUN`.
    pub kick_signal: i32,
}

/// ioctl request numbers (`kvm-ioctls` keeps its own private).
#[allow(non_snake_case, missing_docs)]
mod ioctls {
    use kvm_bindings::{
        kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irqfd, kvm_msi,
        kvm_userspace_memory_region,
    };

    const KVMIO: u32 = 0xAE;
    vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    vmm_sys_util::ioctl_iow_nr!(
        KVM_SET_USER_MEMORY_REGION,
        KVMIO,
        0x46,
        kvm_userspace_memory_region
    );
    vmm_sys_util::ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_irq_level);
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
    vmm_sys_util::ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_irqfd);
    vmm_sys_util::ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);
    vmm_sys_util::ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_msi);
}

/// KVM VM ioctls that raise interrupts: an INTx level, an MSI, and the
/// irqfds and GSI routes that MSI-X vectors get on first use (on whichever
/// thread sends a vector's first message: see [`raising_interrupts`]).
fn interrupt_ioctls() -> Vec<u64> {
    vec![
        ioctls::KVM_IRQ_LINE(),
        ioctls::KVM_SIGNAL_MSI(),
        ioctls::KVM_IRQFD(),
        ioctls::KVM_SET_GSI_ROUTING(),
    ]
}

/// KVM VM ioctls that follow a PCI BAR the guest moves: ivshmem's shared
/// memory slots and virtio-pci's notify ioeventfds.
fn bar_ioctls() -> Vec<u64> {
    vec![
        ioctls::KVM_SET_USER_MEMORY_REGION(),
        ioctls::KVM_IOEVENTFD(),
    ]
}

/// Besides [`interrupt_ioctls`], what a thread that raises interrupts needs:
/// the first message of an MSI-X vector creates the vector's irqfd
/// (`vmm::irq::IrqfdMsiSender`).
fn raising_interrupts() -> Policy {
    vec![(libc::SYS_eventfd2, When::Always)]
}

/// The socket ioctl `set_nonblocking` uses (a virtio console's accepted
/// client).
fn nonblocking_ioctl() -> Vec<u64> {
    vec![libc::FIONBIO]
}

/// Pseudo-terminal setup for a virtio console attached at runtime
/// (`posix_openpt`, `grantpt`, `unlockpt`, `ptsname_r`, raw mode).
fn pty_ioctls() -> Vec<u64> {
    vec![libc::TCGETS, libc::TCSETS, libc::TIOCGPTN, libc::TIOCSPTLCK]
}

/// What every thread needs: its own I/O on descriptors it already has
/// (logging to stderr, eventfds), locks, the clock, the allocator, and
/// leaving. Memory may never become executable.
fn common() -> Policy {
    use libc::*;
    vec![
        (SYS_read, When::Always),
        (SYS_write, When::Always),
        (SYS_writev, When::Always),
        (SYS_close, When::Always),
        (SYS_fcntl, When::Always),
        (SYS_futex, When::Always),
        (SYS_sched_yield, When::Always),
        (SYS_clock_gettime, When::Always),
        (SYS_clock_nanosleep, When::Always),
        (SYS_nanosleep, When::Always),
        (SYS_gettimeofday, When::Always),
        (SYS_restart_syscall, When::Always),
        // The allocator and thread stacks; never PROT_EXEC.
        (SYS_brk, When::Always),
        (SYS_mmap, When::ArgClear(2, PROT_EXEC as u64)),
        (SYS_mprotect, When::ArgClear(2, PROT_EXEC as u64)),
        (SYS_munmap, When::Always),
        (SYS_mremap, When::Always),
        (SYS_madvise, When::Always),
        // Signal handler returns (the vCPU kick), thread exit.
        (SYS_rt_sigreturn, When::Always),
        (SYS_rt_sigprocmask, When::Always),
        (SYS_sigaltstack, When::Always),
        (SYS_getpid, When::Always),
        (SYS_gettid, When::Always),
        (SYS_getrandom, When::Always),
        (SYS_exit, When::Always),
        (SYS_exit_group, When::Always),
    ]
}

/// A vCPU thread: `KVM_RUN`, and the device models it serves on MMIO/PIO
/// exits (console output, virtio queues served on exits when
/// `ioeventfd = false`: disk reads and writes, console sockets; ivshmem
/// doorbells; PCI BAR moves and MSI-X programming).
fn vcpu() -> Policy {
    use libc::*;
    let mut ioctl = vec![ioctls::KVM_RUN()];
    ioctl.extend(bar_ioctls());
    ioctl.extend(interrupt_ioctls());
    ioctl.extend(nonblocking_ioctl());
    let mut list = vec![
        (SYS_ioctl, When::ArgIn(1, ioctl)),
        // Pinning (`cpus.pin`) happens on the thread itself.
        (SYS_sched_setaffinity, When::ArgIn(0, vec![0])),
        (SYS_pread64, When::Always),
        (SYS_pwrite64, When::Always),
        (SYS_fdatasync, When::Always),
        (SYS_fsync, When::Always),
        (SYS_accept4, When::Always),
        (SYS_recvfrom, When::Always),
        (SYS_sendto, When::Always),
    ];
    list.extend(raising_interrupts());
    list
}

/// A virtio device's worker: waits on queue eventfds and the backend's host
/// fds, serves the queues (disk I/O, console sockets and ptys, entropy),
/// interrupts through irqfds.
fn virtio_worker() -> Policy {
    use libc::*;
    let mut ioctl = interrupt_ioctls();
    ioctl.extend(nonblocking_ioctl());
    let mut list = vec![
        (SYS_ioctl, When::ArgIn(1, ioctl)),
        (legacy::SYS_poll, When::Always),
        (SYS_ppoll, When::Always),
        (SYS_pread64, When::Always),
        (SYS_pwrite64, When::Always),
        (SYS_fdatasync, When::Always),
        (SYS_fsync, When::Always),
        (SYS_accept4, When::Always),
        (SYS_recvfrom, When::Always),
        (SYS_sendto, When::Always),
    ];
    list.extend(raising_interrupts());
    list
}

/// The console input pump: reads stdin, waits for UART FIFO space.
fn console_input() -> Policy {
    use libc::*;
    vec![(legacy::SYS_poll, When::Always), (SYS_ppoll, When::Always)]
}

/// The control loop: epoll on the stop eventfd, the signalfd and the
/// ivshmem doorbell sockets; doorbells become interrupts; at the end it
/// kicks and joins the other threads and tears the devices down (BARs
/// unmapped, ioeventfds and irqfds unregistered, sockets, links and region
/// files removed).
fn control(facts: ProcessFacts) -> Policy {
    use libc::*;
    let mut ioctl = interrupt_ioctls();
    ioctl.extend(bar_ioctls());
    let mut list = vec![
        (SYS_ioctl, When::ArgIn(1, ioctl)),
        (legacy::SYS_epoll_wait, When::Always),
        (SYS_epoll_pwait, When::Always),
        (SYS_epoll_ctl, When::Always),
        (SYS_recvfrom, When::Always),
        (SYS_sendto, When::Always),
        kick_vcpus(facts),
        (SYS_statx, When::Always),
        (SYS_newfstatat, When::Always),
        (SYS_fstat, When::Always),
        (legacy::SYS_readlink, When::Always),
        (SYS_readlinkat, When::Always),
        (legacy::SYS_unlink, When::Always),
        (SYS_unlinkat, When::Always),
    ];
    list.extend(raising_interrupts());
    list
}

/// Kicks go to this process's own vCPU threads only, with the kick signal
/// (stop: the control thread; pause: the API).
fn kick_vcpus(facts: ProcessFacts) -> (i64, When) {
    (
        libc::SYS_tgkill,
        When::ArgsEq(vec![
            (0, u64::from(facts.pid)),
            (2, facts.kick_signal as u64),
        ]),
    )
}

/// The control API: accepts connections and serves each on a thread of its
/// own; a request may attach a device, which opens its files, creates its
/// sockets, pty and links, eventfds, registers irqfds, ioeventfds and GSI
/// routes, and starts its virtio worker thread (which starts under this
/// filter, so everything a worker calls is here too).
fn api(facts: ProcessFacts) -> Policy {
    use libc::*;
    let mut ioctl = interrupt_ioctls();
    ioctl.extend(bar_ioctls());
    ioctl.extend(nonblocking_ioctl());
    ioctl.extend(pty_ioctls());
    vec![
        (SYS_ioctl, When::ArgIn(1, ioctl)),
        // `pause` kicks the vCPUs.
        kick_vcpus(facts),
        // Connections.
        (SYS_accept4, When::Always),
        (SYS_recvfrom, When::Always),
        (SYS_sendto, When::Always),
        (SYS_setsockopt, When::Always),
        (legacy::SYS_poll, When::Always),
        (SYS_ppoll, When::Always),
        // Threads: connections and virtio workers. Only threads (clone3,
        // whose flags a filter cannot see, answers ENOSYS: see
        // `clone3_enosys`), which name themselves and stack their own filter.
        (SYS_clone, When::ArgSet(0, CLONE_THREAD as u64)),
        (SYS_clone3, When::Always),
        (SYS_set_robust_list, When::Always),
        (SYS_rseq, When::Always),
        (SYS_sched_getaffinity, When::Always),
        (
            SYS_prctl,
            When::ArgIn(0, vec![PR_SET_NAME as u64, PR_SET_NO_NEW_PRIVS as u64]),
        ),
        (
            SYS_seccomp,
            When::ArgsEq(vec![(0, u64::from(SECCOMP_SET_MODE_FILTER)), (1, 0)]),
        ),
        // Device files: disk images, output files, console sockets, ptys
        // and their links, the runtime directory; `/proc/self/status`.
        (SYS_openat, When::Always),
        // Claims of an attached device (partition::claims): the cell's
        // record is rewritten in place; a refusal lists the records.
        (SYS_ftruncate, When::Always),
        (SYS_getdents64, When::Always),
        (SYS_statx, When::Always),
        (SYS_newfstatat, When::Always),
        (SYS_fstat, When::Always),
        (SYS_lseek, When::Always),
        (legacy::SYS_readlink, When::Always),
        (SYS_readlinkat, When::Always),
        (legacy::SYS_unlink, When::Always),
        (SYS_unlinkat, When::Always),
        (legacy::SYS_mkdir, When::Always),
        (SYS_mkdirat, When::Always),
        (legacy::SYS_symlink, When::Always),
        (SYS_symlinkat, When::Always),
        (legacy::SYS_chmod, When::Always),
        (SYS_fchmod, When::Always),
        (SYS_fchmodat, When::Always),
        (SYS_getuid, When::Always),
        (SYS_geteuid, When::Always),
        (SYS_socket, When::ArgIn(0, vec![AF_UNIX as u64])),
        (SYS_bind, When::Always),
        (SYS_listen, When::Always),
        (SYS_connect, When::Always),
        (SYS_eventfd2, When::Always),
        // A PCI bridge's config-space mirror window and its functions'
        // pages (pci::mirror_window): close-on-exec memfds, mapped (never
        // executable) by the common `mmap`.
        (SYS_memfd_create, When::ArgIn(1, vec![MFD_CLOEXEC as u64])),
        // What the virtio workers it starts do.
        (SYS_pread64, When::Always),
        (SYS_pwrite64, When::Always),
        (SYS_fdatasync, When::Always),
        (SYS_fsync, When::Always),
    ]
}

/// `kind`'s allow list: the common calls and the kind's own.
pub(crate) fn policy(kind: ThreadKind, facts: ProcessFacts) -> Policy {
    let mut list = common();
    list.extend(match kind {
        ThreadKind::Control => control(facts),
        ThreadKind::Vcpu => vcpu(),
        ThreadKind::Api => api(facts),
        ThreadKind::VirtioWorker => virtio_worker(),
        ThreadKind::ConsoleInput => console_input(),
    });
    list.retain(|(call, _)| *call != legacy::ABSENT);
    list
}

/// The system calls only x86_64 has, which glibc uses there. aarch64 has
/// only their `*at` and `p*` forms (which the lists name as well): there
/// they are [`legacy::ABSENT`], which [`policy`] drops.
#[allow(non_upper_case_globals)]
mod legacy {
    /// The number standing for a call this architecture does not have.
    pub const ABSENT: i64 = -1;
    #[cfg(target_arch = "x86_64")]
    pub use libc::{
        SYS_chmod, SYS_epoll_wait, SYS_mkdir, SYS_poll, SYS_readlink, SYS_symlink, SYS_unlink,
    };
    #[cfg(not(target_arch = "x86_64"))]
    pub const SYS_chmod: i64 = ABSENT;
    #[cfg(not(target_arch = "x86_64"))]
    pub const SYS_epoll_wait: i64 = ABSENT;
    #[cfg(not(target_arch = "x86_64"))]
    pub const SYS_mkdir: i64 = ABSENT;
    #[cfg(not(target_arch = "x86_64"))]
    pub const SYS_poll: i64 = ABSENT;
    #[cfg(not(target_arch = "x86_64"))]
    pub const SYS_readlink: i64 = ABSENT;
    #[cfg(not(target_arch = "x86_64"))]
    pub const SYS_symlink: i64 = ABSENT;
    #[cfg(not(target_arch = "x86_64"))]
    pub const SYS_unlink: i64 = ABSENT;
}

/// Whether `kind` starts threads: then `clone3` answers ENOSYS (a second,
/// tiny filter), so the C library falls back to `clone`, whose flags the
/// allow list checks.
pub(crate) fn spawns_threads(kind: ThreadKind) -> bool {
    kind == ThreadKind::Api
}
