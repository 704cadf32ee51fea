//! Surprise removal ([`VirtioState::sever`]): the host side goes, the
//! registers stay, no request the driver waits for is left hanging.

use super::*;

#[test]
fn severed_disk_fails_every_request_and_leaves_the_image_untouched() {
    let img = image(8);
    let before = std::fs::read(img.path()).unwrap();
    let mut g = block_guest(&img, false);
    g.dev.sever();
    let io_error = VIRTIO_BLK_S_IOERR as u8;
    assert_eq!(g.blk(VIRTIO_BLK_T_IN, 0, Some((512, true))).0, io_error);
    g.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(g.blk(VIRTIO_BLK_T_OUT, 1, Some((512, false))).0, io_error);
    assert_eq!(g.blk(VIRTIO_BLK_T_FLUSH, 0, None).0, io_error);
    assert_eq!(g.blk(VIRTIO_BLK_T_GET_ID, 0, Some((20, true))).0, io_error);
    assert!(g.line.high(), "completions still raise the interrupt");
    assert_eq!(std::fs::read(img.path()).unwrap(), before);
}

#[test]
fn severed_device_reads_all_ones_in_its_config_but_its_registers_still_answer() {
    let img = image(8);
    let mut g = block_guest(&img, false);
    g.dev.sever();
    let mut capacity = [0u8; 8];
    g.dev.read(regs::CONFIG, &mut capacity);
    assert_eq!(capacity, [0xff; 8]);
    assert_eq!(g.r32(regs::MAGIC), MAGIC);
    // The driver's teardown: reset, then each queue disabled and checked.
    g.w32(regs::STATUS, 0);
    assert_eq!(g.status(), 0);
    g.w32(regs::QUEUE_SEL, 0);
    assert_eq!(g.r32(regs::QUEUE_READY), 0);
}

#[test]
fn severed_rng_leaves_requests_unanswered() {
    let mut g = rng_guest();
    g.probe(1);
    g.dev.sever();
    g.add_chain(0, &[(BUF, 64, true)]);
    g.notify(0);
    assert_eq!(g.used_idx(0), 0);
    assert!(!g.line.high());
}

#[test]
fn severed_console_returns_output_buffers_and_writes_nothing() {
    let out = Sink::default();
    let backend = ConsoleBackend::with_writer("test", Box::new(out.clone()));
    let mut g = Guest::new(Box::new(backend));
    g.probe(2);
    g.dev.sever();
    g.mem.write_slice(b"lost\n", GuestAddress(BUF)).unwrap();
    g.add_chain(1, &[(BUF, 5, false)]);
    g.notify(1);
    assert_eq!(g.used_idx(1), 1, "hvc waits for its buffer: it comes back");
    assert!(out.0.lock().unwrap().is_empty());
}

#[test]
fn sever_twice_is_harmless() {
    let img = image(8);
    let mut g = block_guest(&img, false);
    g.dev.sever();
    g.dev.sever();
    assert_eq!(
        g.blk(VIRTIO_BLK_T_IN, 0, Some((512, true))).0,
        VIRTIO_BLK_S_IOERR as u8
    );
}
