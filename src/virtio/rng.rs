//! virtio-rng (entropy device, virtio 1.2 5.4): one request queue whose
//! device-writable buffers are filled from the host's `getrandom(2)`.

use super::{
    complete, next_valid_request, reject, scatter, VirtioBackend, VirtioError, VIRTIO_F_VERSION_1,
};
use crate::ratelimit::RateLimiter;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes served per request (the spec lets the device write fewer).
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// Fills `buf` from the host's getrandom. Returns how many bytes were filled
/// (all of them unless the kernel reports an error other than EINTR).
pub fn host_random(buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe the writable slice `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        done += n as usize;
    }
    done
}

/// The entropy device backend.
pub struct RngBackend {
    queue_sizes: [u16; 1],
    /// Surprise-removed: requests are left unanswered.
    severed: bool,
    log: RateLimiter,
}

impl Default for RngBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl RngBackend {
    /// An entropy backend.
    pub fn new() -> Self {
        RngBackend {
            queue_sizes: [QUEUE_SIZE],
            severed: false,
            log: RateLimiter::new(10),
        }
    }

    /// The same with queues of `size` descriptors (a power of two).
    pub fn with_queue_size(mut self, size: u16) -> Self {
        self.queue_sizes = [size];
        self
    }
}

impl VirtioBackend for RngBackend {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_RNG
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn config_space(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Nothing of the host to drop; requests are left unanswered from now
    /// on (virtio-rng's removal does not wait for them).
    fn sever(&mut self) {
        self.severed = true;
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        if self.severed {
            return Ok(false);
        }
        let mut used = false;
        let mut chunk = [0u8; 4096];
        while let Some(req) = next_valid_request(index, queue, mem, &self.log, "rng", &mut used)? {
            if req.readable().next().is_some() {
                reject(
                    index,
                    queue,
                    mem,
                    req.head,
                    "device-readable buffer in an entropy request",
                    &self.log,
                    "rng",
                )?;
                used = true;
                continue;
            }
            let want = (req.writable_len() as usize).min(MAX_BYTES_PER_REQUEST);
            let mut written = 0;
            while written < want {
                let n = (want - written).min(chunk.len());
                let got = host_random(&mut chunk[..n]);
                let put = scatter(mem, req.writable(), written as u64, &chunk[..got]);
                written += put;
                if put < n {
                    break;
                }
            }
            complete(index, queue, mem, req.head, written as u32)?;
            used = true;
        }
        Ok(used)
    }
}
