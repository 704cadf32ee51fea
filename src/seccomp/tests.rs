use super::policy::{policy, spawns_threads, Policy, ProcessFacts, When};
use super::*;
use std::collections::{BTreeMap, BTreeSet};

fn facts() -> ProcessFacts {
    ProcessFacts {
        pid: std::process::id(),
        kick_signal: libc::SIGRTMIN(),
    }
}

fn as_map(list: &Policy) -> BTreeMap<i64, When> {
    list.iter().cloned().collect()
}

#[test]
fn every_thread_kind_has_a_filter_that_compiles_to_bpf() {
    let filters = Filters::compile(libc::SIGRTMIN()).unwrap();
    for kind in ThreadKind::ALL {
        let programs = filters.programs(kind);
        let expected = if spawns_threads(kind) { 2 } else { 1 };
        assert_eq!(programs.len(), expected, "{kind}");
        for p in programs {
            // The kernel's limit per program (BPF_MAXINSNS).
            assert!(!p.is_empty() && p.len() <= 4096, "{kind}: {}", p.len());
        }
    }
}

#[test]
fn no_list_names_a_system_call_twice() {
    for kind in ThreadKind::ALL {
        let list = policy(kind, facts());
        let mut seen = BTreeSet::new();
        for (nr, _) in &list {
            assert!(seen.insert(*nr), "{kind}: system call {nr} is listed twice");
        }
    }
}

#[test]
fn a_virtio_worker_may_call_nothing_the_api_filter_forbids() {
    // Workers of devices attached at runtime start on an API thread, under
    // its filter, and stack their own: what a worker needs must pass both.
    let api = as_map(&policy(ThreadKind::Api, facts()));
    for (nr, when) in policy(ThreadKind::VirtioWorker, facts()) {
        let outer = api
            .get(&nr)
            .unwrap_or_else(|| panic!("system call {nr}: a worker may, the API may not"));
        assert!(
            outer.covers(&when),
            "system call {nr}: {when:?} not within {outer:?}"
        );
    }
}

#[test]
fn no_filter_allows_starting_programs_tracing_or_kernel_changes() {
    use libc::*;
    let forbidden = vec![
        SYS_execve,
        SYS_execveat,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_kill,
        SYS_tkill,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_unshare,
        SYS_setns,
        SYS_setuid,
        SYS_setgid,
        SYS_init_module,
        SYS_finit_module,
        SYS_kexec_load,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_keyctl,
        SYS_personality,
        SYS_open_by_handle_at,
    ];
    // fork and vfork exist on x86_64 only (aarch64 has clone alone).
    #[cfg(target_arch = "x86_64")]
    let forbidden = [forbidden, vec![SYS_fork, SYS_vfork]].concat();
    for kind in ThreadKind::ALL {
        let list = as_map(&policy(kind, facts()));
        for &nr in &forbidden {
            assert!(!list.contains_key(&nr), "{kind} allows system call {nr}");
        }
    }
}

#[test]
fn only_threads_that_start_threads_may_clone_and_only_threads() {
    for kind in ThreadKind::ALL {
        let list = as_map(&policy(kind, facts()));
        match list.get(&libc::SYS_clone) {
            None => assert!(!spawns_threads(kind), "{kind}"),
            Some(when) => {
                assert!(spawns_threads(kind), "{kind}");
                assert_eq!(when, &When::ArgSet(0, libc::CLONE_THREAD as u64));
            }
        }
    }
}

#[test]
fn no_thread_may_make_memory_executable() {
    for kind in ThreadKind::ALL {
        let list = as_map(&policy(kind, facts()));
        for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
            assert_eq!(
                list.get(&nr),
                Some(&When::ArgClear(2, libc::PROT_EXEC as u64)),
                "{kind}: {nr}"
            );
        }
        assert!(!list.contains_key(&libc::SYS_pkey_mprotect), "{kind}");
    }
}

#[test]
fn the_control_thread_signals_only_its_own_process_with_the_kick() {
    let list = as_map(&policy(ThreadKind::Control, facts()));
    assert_eq!(
        list.get(&libc::SYS_tgkill),
        Some(&When::ArgsEq(vec![
            (0, u64::from(std::process::id())),
            (2, libc::SIGRTMIN() as u64)
        ]))
    );
}

#[test]
fn covers_compares_argument_lists() {
    assert!(When::Always.covers(&When::ArgIn(1, vec![2])));
    assert!(When::ArgIn(1, vec![2, 3]).covers(&When::ArgIn(1, vec![3])));
    assert!(!When::ArgIn(1, vec![2]).covers(&When::ArgIn(1, vec![2, 3])));
    assert!(!When::ArgIn(0, vec![2]).covers(&When::ArgIn(1, vec![2])));
    assert!(!When::ArgIn(1, vec![2]).covers(&When::Always));
}

#[test]
fn the_violation_line_names_the_thread_kind_and_the_call() {
    let m = violation_message(Some(ThreadKind::Vcpu), 41, true);
    assert_eq!(
        std::str::from_utf8(m.bytes()).unwrap(),
        "cellvm: seccomp: forbidden system call 41 on a vcpu thread; \
         stopping (exit status 159, docs/security.md)\n"
    );
    let m = violation_message(None, 0, true);
    assert!(std::str::from_utf8(m.bytes()).unwrap().starts_with(
        "cellvm: seccomp: forbidden system call 0 on a thread without a cellvm filter;"
    ));
    let m = violation_message(Some(ThreadKind::Api), 7, false);
    assert_eq!(
        std::str::from_utf8(m.bytes()).unwrap(),
        "cellvm: seccomp: SIGSYS received; stopping\n"
    );
}

#[test]
fn numbers_print_without_allocating_and_long_messages_are_cut() {
    let mut m = Message::new();
    m.push_number(0)
        .push(b" ")
        .push_number(-12)
        .push(b" ")
        .push_number(i64::MIN);
    assert_eq!(
        std::str::from_utf8(m.bytes()).unwrap(),
        "0 -12 -9223372036854775808"
    );
    let mut long = Message::new();
    for _ in 0..100 {
        long.push(b"abcdef");
    }
    assert_eq!(long.bytes().len(), 256);
}

#[test]
fn the_sigsys_layout_matches_the_kernels_siginfo() {
    assert_eq!(std::mem::offset_of!(SigsysInfo, code), 8);
    assert_eq!(std::mem::offset_of!(SigsysInfo, syscall), 24);
    assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());
    assert_eq!(EXIT_BAD_SYSCALL, 159);
}
