//! virtio-blk (virtio 1.2 5.2) backed by a raw image file.
//!
//! Supports `VIRTIO_BLK_T_IN`, `OUT`, `FLUSH` and `GET_ID`; everything else
//! completes with `VIRTIO_BLK_S_UNSUPP`. Requests are checked against the
//! image size (whole 512-byte sectors; a trailing partial sector is not
//! visible to the guest) and complete with `VIRTIO_BLK_S_IOERR` when they
//! fall outside it, when the data length is not a multiple of 512, when they
//! write to a read-only image, when the host I/O fails, or once the disk was
//! surprise-removed (the image is closed then). I/O is synchronous,
//! in the notifying vCPU's thread.

use super::{
    complete, gather, next_valid_request, reject, scatter, Request, VirtioBackend, VirtioError,
    VIRTIO_F_VERSION_1,
};
use crate::ratelimit::RateLimiter;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Size of the request header (type, reserved, sector).
const HEADER_LEN: u64 = 16;
/// Host I/O is done in chunks of this size.
const CHUNK: usize = 64 * 1024;

/// The block device backend.
pub struct BlockBackend {
    path: PathBuf,
    /// The image; `None` once surprise-removed (every request then fails).
    file: Option<File>,
    read_only: bool,
    /// Capacity in 512-byte sectors.
    capacity: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    queue_sizes: [u16; 1],
    log: RateLimiter,
}

impl BlockBackend {
    /// The same with a queue of `size` descriptors (a power of two); the
    /// segment limit the driver sees follows it.
    pub fn with_queue_size(mut self, size: u16) -> Self {
        self.queue_sizes = [size];
        self
    }

    /// Opens the raw image at `path` (read-only when `read_only`). `serial`
    /// is what `VIRTIO_BLK_T_GET_ID` returns (truncated to 20 bytes; Linux
    /// shows it as /sys/block/vdX/serial).
    pub fn open(path: &Path, read_only: bool, serial: &str) -> Result<Self, VirtioError> {
        let err = |source| VirtioError::Image {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = serial.len().min(id.len());
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Ok(BlockBackend {
            path: path.to_path_buf(),
            file: Some(file),
            read_only,
            capacity: len / SECTOR_SIZE,
            id,
            queue_sizes: [QUEUE_SIZE],
            log: RateLimiter::new(10),
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn warn(&self, msg: std::fmt::Arguments<'_>) {
        if self.log.allow() {
            log::warn!("virtio-blk {}: {msg}", self.path.display());
        }
    }

    /// Byte offset of `sector` if `len` bytes from there lie inside the image.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return None;
        }
        let end = sector.checked_add(len / SECTOR_SIZE)?;
        (end <= self.capacity).then(|| sector * SECTOR_SIZE)
    }

    /// Serves one request whose data buffers are `req`'s readable bytes after
    /// the header (OUT) or writable bytes before the status byte (IN, GET_ID).
    /// Returns (status, bytes written into the data buffers).
    fn serve(&mut self, mem: &GuestMemoryMmap, req: &Request, header: [u8; 16]) -> (u32, u64) {
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let in_len = req.writable_len() - 1;
        let Some(file) = &self.file else {
            self.warn(format_args!(
                "request on a surprise-removed disk failed (VIRTIO_BLK_S_IOERR)"
            ));
            return (VIRTIO_BLK_S_IOERR, 0);
        };
        match kind {
            VIRTIO_BLK_T_IN => {
                let Some(mut pos) = self.range(sector, in_len) else {
                    self.warn(format_args!("read of {in_len} bytes at sector {sector} outside {} sectors (or not whole sectors)", self.capacity));
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let mut buf = vec![0u8; CHUNK.min(in_len as usize)];
                let mut done = 0u64;
                while done < in_len {
                    let n = (in_len - done).min(CHUNK as u64) as usize;
                    if let Err(e) = file.read_exact_at(&mut buf[..n], pos) {
                        self.warn(format_args!("read at {pos:#x}: {e}"));
                        return (VIRTIO_BLK_S_IOERR, done);
                    }
                    let put = scatter(mem, req.writable(), done, &buf[..n]);
                    done += put as u64;
                    if put < n {
                        return (VIRTIO_BLK_S_IOERR, done);
                    }
                    pos += n as u64;
                }
                (VIRTIO_BLK_S_OK, done)
            }
            VIRTIO_BLK_T_OUT => {
                let out_len = req.readable_len() - HEADER_LEN;
                if self.read_only {
                    self.warn(format_args!("write to a read-only image refused"));
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let Some(mut pos) = self.range(sector, out_len) else {
                    self.warn(format_args!("write of {out_len} bytes at sector {sector} outside {} sectors (or not whole sectors)", self.capacity));
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let mut buf = vec![0u8; CHUNK.min(out_len as usize)];
                let mut done = 0u64;
                while done < out_len {
                    let n = (out_len - done).min(CHUNK as u64) as usize;
                    let got = gather(mem, req.readable(), HEADER_LEN + done, &mut buf[..n]);
                    if got < n {
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                    if let Err(e) = file.write_all_at(&buf[..n], pos) {
                        self.warn(format_args!("write at {pos:#x}: {e}"));
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                    done += n as u64;
                    pos += n as u64;
                }
                (VIRTIO_BLK_S_OK, 0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if self.read_only {
                    return (VIRTIO_BLK_S_OK, 0);
                }
                match file.sync_data() {
                    Ok(()) => (VIRTIO_BLK_S_OK, 0),
                    Err(e) => {
                        self.warn(format_args!("flush: {e}"));
                        (VIRTIO_BLK_S_IOERR, 0)
                    }
                }
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = (in_len as usize).min(self.id.len());
                let put = scatter(mem, req.writable(), 0, &self.id[..n]);
                (VIRTIO_BLK_S_OK, put as u64)
            }
            other => {
                self.warn(format_args!("unsupported request type {other}"));
                (VIRTIO_BLK_S_UNSUPP, 0)
            }
        }
    }
}

impl VirtioBackend for BlockBackend {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK
    }

    fn device_features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | 1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX;
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    /// `struct virtio_blk_config` up to `blk_size`: capacity (le64),
    /// size_max (le32, unused), seg_max (le32), geometry (unused), blk_size.
    fn config_space(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(24);
        c.extend_from_slice(&self.capacity.to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&u32::from(self.queue_sizes[0].saturating_sub(2).max(1)).to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c
    }

    /// Closes the image: its lock can pass to another cell at once. Every
    /// later request completes with `VIRTIO_BLK_S_IOERR`, so none the
    /// driver waits for when it goes (del_gendisk) is left in flight.
    fn sever(&mut self) {
        self.file = None;
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(req) = next_valid_request(index, queue, mem, &self.log, "blk", &mut used)? {
            used = true;
            let mut header = [0u8; 16];
            if req.readable_len() < HEADER_LEN
                || gather(mem, req.readable(), 0, &mut header) < header.len()
            {
                reject(
                    index,
                    queue,
                    mem,
                    req.head,
                    "request without a 16-byte header",
                    &self.log,
                    "blk",
                )?;
                continue;
            }
            // The status byte is the last byte of the last writable buffer.
            let Some(status_buf) = req.writable().filter(|b| b.len > 0).last().copied() else {
                reject(
                    index,
                    queue,
                    mem,
                    req.head,
                    "request without a status byte",
                    &self.log,
                    "blk",
                )?;
                continue;
            };
            let (status, data) = self.serve(mem, &req, header);
            let at = status_buf.addr.0 + u64::from(status_buf.len) - 1;
            let status_written = scatter(
                mem,
                [super::Buffer {
                    addr: vm_memory::GuestAddress(at),
                    len: 1,
                    writable: true,
                }]
                .iter(),
                0,
                &[status as u8],
            );
            complete(
                index,
                queue,
                mem,
                req.head,
                (data + status_written as u64) as u32,
            )?;
        }
        Ok(used)
    }
}
