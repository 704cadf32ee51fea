//! Building virtio devices from their configuration, and the threads that
//! feed host input (console sockets and ptys) to them.

use super::{irq, VmmError};
use crate::config::{VirtioBackendConfig, VirtioKind};
use crate::stop::StopHandle;
use crate::virtio::{
    BlockBackend, ConsoleBackend, ConsoleHost, HostInput, RngBackend, VirtioBackend,
};
use kvm_ioctls::VmFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The backend a device's configuration asks for. `id` names it in errors
/// and is the default disk serial.
pub(crate) fn build_backend(
    id: &str,
    kind: VirtioKind,
    b: &VirtioBackendConfig,
) -> Result<Box<dyn VirtioBackend>, VmmError> {
    let backend: Box<dyn VirtioBackend> = match kind {
        VirtioKind::Rng => {
            let r = RngBackend::new();
            Box::new(match b.queue_size {
                Some(n) => r.with_queue_size(n),
                None => r,
            })
        }
        VirtioKind::Block => {
            let path = b.path.as_ref().ok_or_else(|| {
                VmmError::Boot(format!("virtio device {id}: a block device needs a path"))
            })?;
            let d = BlockBackend::open(path, b.read_only, b.serial.as_deref().unwrap_or(id))?;
            Box::new(match b.queue_size {
                Some(n) => d.with_queue_size(n),
                None => d,
            })
        }
        VirtioKind::Console => {
            let host = match (&b.path, &b.socket, &b.pty) {
                (Some(p), _, _) => ConsoleHost::File(p.clone()),
                (None, Some(s), _) => ConsoleHost::Socket(s.clone()),
                (None, None, Some(p)) => ConsoleHost::Pty(p.clone()),
                (None, None, None) => ConsoleHost::Stdout,
            };
            let c = ConsoleBackend::open(&host)?;
            Box::new(match b.queue_size {
                Some(n) => c.with_queue_size(n),
                None => c,
            })
        }
    };
    Ok(backend)
}

/// The MSI sender of a cell's virtio-pci functions.
pub(crate) fn msi_sender(vm: &Arc<VmFd>) -> Arc<dyn crate::pci::MsiSender> {
    Arc::new(irq::KvmMsiSender::new(vm.clone()))
}

/// Feeds host input to `dev` until the cell stops or `alive` goes false:
/// waits for its host fds (at most 200 ms, so the set is refreshed and a
/// stop is noticed), then lets the device move what is waiting into guest
/// buffers.
pub(crate) fn spawn_input_pump(
    name: &str,
    dev: Arc<Mutex<dyn HostInput>>,
    stop: StopHandle,
    alive: Arc<AtomicBool>,
) -> Result<(), VmmError> {
    std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || {
            while !stop.is_stopped() && alive.load(Ordering::Acquire) {
                let fds = dev.lock().unwrap_or_else(|e| e.into_inner()).host_fds();
                let mut pfds: Vec<libc::pollfd> = fds
                    .iter()
                    .map(|fd| libc::pollfd {
                        fd: *fd,
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds; the
                // fds stay open while the device (held by this thread) lives.
                unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
                if !alive.load(Ordering::Acquire) {
                    break;
                }
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .process_host_input();
            }
        })
        .map_err(|e| VmmError::Os {
            what: "spawn virtio console input thread",
            source: e,
        })?;
    Ok(())
}
