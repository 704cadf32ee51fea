//! Seccomp filters: every thread of a running cell may make only the system
//! calls its kind of thread needs (docs/security.md).
//!
//! A filter applies to the thread that installs it and to the threads it
//! starts afterwards (filters are inherited and only ever stack more
//! restrictively; cellvm never uses TSYNC). So each thread installs its own
//! filter first thing ([`spawn`] does it before the thread's body runs and
//! reports a failure to the spawner), and the control loop installs its
//! filter on its own thread last, after every other thread was started.
//! Threads the API thread starts (its per-connection threads, the workers of
//! virtio devices attached at runtime) start under the API filter; a worker
//! then stacks its own, narrower one.
//!
//! A call outside the list traps (`SIGSYS`): the handler writes one line
//! naming the thread kind and the system call number to stderr and ends the
//! process with [`EXIT_BAD_SYSCALL`].

mod policy;

use policy::{ProcessFacts, When};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use thiserror::Error;

/// The exit status of a cellvm stopped by a forbidden system call: 128 +
/// SIGSYS, what a shell reports for a process killed by SIGSYS.
pub const EXIT_BAD_SYSCALL: u8 = 128 + libc::SIGSYS as u8;

/// The kinds of threads a running cell has; each has its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThreadKind {
    /// The thread running the control loop (the caller of `Cell::run`).
    Control,
    /// A vCPU thread, with the device models it serves on exits.
    Vcpu,
    /// The control API: its accept loop and per-connection threads.
    Api,
    /// A virtio device's worker thread.
    VirtioWorker,
    /// The console input pump.
    ConsoleInput,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Control,
        ThreadKind::Vcpu,
        ThreadKind::Api,
        ThreadKind::VirtioWorker,
        ThreadKind::ConsoleInput,
    ];

    /// The kind's name in messages and docs.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Control => "control",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Api => "api",
            ThreadKind::VirtioWorker => "virtio-worker",
            ThreadKind::ConsoleInput => "console-input",
        }
    }
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors building or installing filters.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// A filter did not compile to BPF.
    #[error("the seccomp filter of {kind} threads does not compile: {source}")]
    Compile {
        /// Whose filter.
        kind: ThreadKind,
        /// Why.
        source: seccompiler::BackendError,
    },
    /// The kernel refused a filter.
    #[error("cannot install the seccomp filter of a {kind} thread: {source} (is seccomp enabled in this kernel? `cellvm run --seccomp=off` runs without filters)")]
    Install {
        /// Whose filter.
        kind: ThreadKind,
        /// Why.
        source: seccompiler::Error,
    },
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
    /// The thread could not be started, or ended before its filter was in
    /// place.
    #[error("cannot start a {kind} thread: {source}")]
    Spawn {
        /// What kind of thread.
        kind: ThreadKind,
        /// Why.
        source: std::io::Error,
    },
}

/// The compiled filters of every thread kind, for this process.
#[derive(Debug)]
pub struct Filters {
    /// Per kind, the BPF programs in the order they are installed.
    programs: BTreeMap<ThreadKind, Vec<BpfProgram>>,
}

impl Filters {
    /// Compiles every kind's filter. `kick_signal` is the one signal the
    /// control thread may send, and only to this process's threads.
    pub fn compile(kick_signal: i32) -> Result<Self, SeccompError> {
        let facts = ProcessFacts {
            pid: std::process::id(),
            kick_signal,
        };
        let mut programs = BTreeMap::new();
        for kind in ThreadKind::ALL {
            let compile = |source| SeccompError::Compile { kind, source };
            let mut list = Vec::new();
            if policy::spawns_threads(kind) {
                list.push(clone3_enosys().map_err(compile)?);
            }
            list.push(allow_list(kind, facts).map_err(compile)?);
            programs.insert(kind, list);
        }
        Ok(Filters { programs })
    }

    /// Installs `kind`'s filter on the calling thread (and the SIGSYS
    /// handler on the process, once). Irreversible for this thread.
    pub fn apply(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        install_violation_handler()?;
        THREAD_KIND.with(|k| k.set(Some(kind)));
        for program in self.programs(kind) {
            seccompiler::apply_filter(program)
                .map_err(|source| SeccompError::Install { kind, source })?;
        }
        Ok(())
    }

    /// `kind`'s BPF programs, in install order.
    pub fn programs(&self, kind: ThreadKind) -> &[BpfProgram] {
        self.programs.get(&kind).map_or(&[], Vec::as_slice)
    }
}

/// Starts a thread that installs `kind`'s filter (unless `filters` is
/// `None`: `--seccomp=off`) and then runs `body`. Returns once the filter is
/// in place; if it cannot be installed, the thread ends without running
/// `body` and the error is returned.
pub fn spawn<F>(
    builder: std::thread::Builder,
    kind: ThreadKind,
    filters: Option<&Arc<Filters>>,
    body: F,
) -> Result<JoinHandle<()>, SeccompError>
where
    F: FnOnce() + Send + 'static,
{
    let filters = filters.cloned();
    let (tx, rx) = mpsc::sync_channel(1);
    let handle = builder
        .spawn(move || {
            let installed = filters.map_or(Ok(()), |f| f.apply(kind));
            let ok = installed.is_ok();
            let _ = tx.send(installed);
            if ok {
                body();
            }
        })
        .map_err(|source| SeccompError::Spawn { kind, source })?;
    let result = rx.recv();
    match result {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(SeccompError::Spawn {
                kind,
                source: std::io::Error::other("the thread ended before installing its filter"),
            })
        }
    }
}

/// A result of building a filter.
type Compiled<T> = Result<T, seccompiler::BackendError>;

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Compiled<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// The rules of one list entry (any one of them matching allows the call).
fn rules(when: &When) -> Compiled<Vec<SeccompRule>> {
    Ok(match when {
        When::Always => Vec::new(),
        When::ArgIn(arg, values) => values
            .iter()
            .map(|v| SeccompRule::new(vec![condition(*arg, SeccompCmpOp::Eq, *v)?]))
            .collect::<Compiled<_>>()?,
        When::ArgClear(arg, mask) => vec![SeccompRule::new(vec![condition(
            *arg,
            SeccompCmpOp::MaskedEq(*mask),
            0,
        )?])?],
        When::ArgSet(arg, mask) => vec![SeccompRule::new(vec![condition(
            *arg,
            SeccompCmpOp::MaskedEq(*mask),
            *mask,
        )?])?],
        When::ArgsEq(pairs) => vec![SeccompRule::new(
            pairs
                .iter()
                .map(|(arg, v)| condition(*arg, SeccompCmpOp::Eq, *v))
                .collect::<Compiled<_>>()?,
        )?],
    })
}

fn arch() -> Compiled<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
}

/// `kind`'s allow list as BPF: listed calls are allowed, anything else traps.
fn allow_list(kind: ThreadKind, facts: ProcessFacts) -> Compiled<BpfProgram> {
    let mut map = BTreeMap::new();
    for (nr, when) in policy::policy(kind, facts) {
        map.insert(nr, rules(&when)?);
    }
    SeccompFilter::new(map, SeccompAction::Trap, SeccompAction::Allow, arch()?)?.try_into()
}

/// `clone3` fails with ENOSYS, anything else passes (to the allow list).
fn clone3_enosys() -> Compiled<BpfProgram> {
    let map = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )?
    .try_into()
}

thread_local! {
    /// The filter this thread installed, for the violation message. A
    /// const-initialised `Cell` without a destructor: plain thread-local
    /// storage, safe to read in a signal handler.
    static THREAD_KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

static HANDLER: OnceLock<Result<(), i32>> = OnceLock::new();

/// Installs [`on_sigsys`] for SIGSYS (once per process).
fn install_violation_handler() -> Result<(), SeccompError> {
    let result = HANDLER.get_or_init(|| {
        // SAFETY: sigaction is plain data; a zeroed one is valid, and every
        // field the kernel reads is set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigsys;
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: `action` and the old-action null pointer are valid;
        // `on_sigsys` has the SA_SIGINFO signature and is async-signal-safe.
        let rc = unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL))
        }
    });
    result.map_err(|e| SeccompError::Handler(std::io::Error::from_raw_os_error(e)))
}

/// The head of a SIGSYS `siginfo_t` on 64-bit Linux (`_sigsys` member of the
/// union, which starts at byte 16). Only `code` and `syscall` are read; the
/// other fields hold the layout.
#[repr(C)]
#[allow(dead_code)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// `si_code` of a SIGSYS sent by a seccomp filter.
const SYS_SECCOMP: libc::c_int = 1;

/// A message in a fixed buffer, built without allocating (signal handler).
struct Message {
    buf: [u8; 256],
    len: usize,
}

impl Message {
    fn new() -> Self {
        Message {
            buf: [0; 256],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = *b;
                self.len += 1;
            }
        }
        self
    }

    fn push_number(&mut self, n: i64) -> &mut Self {
        if n < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut rest = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The line written for a violation by `kind`'s thread (`None`: a thread
/// without a cellvm filter) of system call `nr`; `seccomp` is false for a
/// SIGSYS that did not come from a filter.
fn violation_message(kind: Option<ThreadKind>, nr: i64, seccomp: bool) -> Message {
    let mut m = Message::new();
    m.push(b"cellvm: seccomp: ");
    if !seccomp {
        m.push(b"SIGSYS received; stopping\n");
        return m;
    }
    m.push(b"forbidden system call ")
        .push_number(nr)
        .push(b" on ");
    match kind {
        Some(kind) => m.push(b"a ").push(kind.name().as_bytes()).push(b" thread"),
        None => m.push(b"a thread without a cellvm filter"),
    };
    m.push(b"; stopping (exit status ")
        .push_number(i64::from(EXIT_BAD_SYSCALL))
        .push(b", docs/security.md)\n");
    m
}

/// The SIGSYS handler: one line to stderr, then the process ends with
/// [`EXIT_BAD_SYSCALL`]. Only async-signal-safe calls (`write`, `_exit`),
/// both in every allow list.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let (seccomp, nr) = if info.is_null() {
        (false, -1)
    } else {
        // SAFETY: the kernel passes a valid siginfo_t (128 bytes) for an
        // SA_SIGINFO handler; SigsysInfo is a prefix of it, with the
        // `_sigsys` layout the kernel fills for SIGSYS.
        let head = unsafe { &*info.cast::<SigsysInfo>() };
        (head.code == SYS_SECCOMP, i64::from(head.syscall))
    };
    let kind = THREAD_KIND.with(Cell::get);
    let message = violation_message(kind, nr, seccomp);
    let bytes = message.bytes();
    // SAFETY: write and _exit are async-signal-safe; the buffer is valid
    // for its length.
    unsafe {
        libc::write(2, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(i32::from(EXIT_BAD_SYSCALL));
    }
}

#[cfg(test)]
mod tests;
