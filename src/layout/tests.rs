use super::*;
use crate::config::{
    CellConfig, ConsoleConfig, ConsoleInput, ConsoleOutput, CpuConfig, DeviceConfig, KernelConfig,
    KernelFormat, MemoryRegion, PciBridgeConfig, PciHostKind, VirtioKind, VirtioMmioConfig, Window,
};

fn cfg() -> CellConfig {
    CellConfig {
        name: "t".into(),
        source: None,
        cpus: CpuConfig {
            count: 1,
            pin: None,
            shared: false,
        },
        memory: vec![MemoryRegion {
            base: 0,
            size: 256 << 20,
            prefault: false,
            lock: false,
        }],
        kernel: KernelConfig {
            path: "k".into(),
            format: KernelFormat::BzImage,
            initrd: None,
            cmdline: String::new(),
            acpi: true,
        },
        console: ConsoleConfig {
            output: ConsoleOutput::None,
            input: ConsoleInput::None,
        },
        virtio_mmio: vec![],
        pci_bridges: vec![],
        uarts: vec![],
        connectors: vec![],
        origins: Default::default(),
    }
}

fn virtio(id: &str, base: Option<u64>, irq: Option<u32>) -> VirtioMmioConfig {
    VirtioMmioConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        kind: VirtioKind::Rng,
        base,
        irq,
        backend: Default::default(),
    }
}

fn bridge(id: &str, kind: PciHostKind, base: Option<u64>, buses: (u8, u8)) -> PciBridgeConfig {
    PciBridgeConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        kind,
        config_base: base,
        bus_start: buses.0,
        bus_end: buses.1,
        mmio32: None,
        mmio64: None,
        devices: vec![],
    }
}

#[test]
fn fixed_platform_devices_and_irqs_are_reserved() {
    let l = CellLayout::new(&cfg()).unwrap();
    let owners: Vec<_> = l
        .map
        .entries()
        .iter()
        .map(|r| r.owner.to_string())
        .collect();
    assert_eq!(
        owners,
        [
            "memory[0]",
            "debug-exit",
            "boot-timer",
            "pvpanic",
            "channel",
            "ioapic",
            "lapic"
        ]
    );
    assert_eq!(
        l.irqs.owner(crate::platform::UART_IRQ),
        Some(&Owner::Platform(Platform::Console))
    );
    assert_eq!(
        l.irqs.owner(crate::platform::CHANNEL_IRQ),
        Some(&Owner::Platform(Platform::Channel))
    );
    assert_eq!(l.ram_end(), 256 << 20);
}

#[test]
fn virtio_devices_get_consecutive_pages_and_dynamic_irqs() {
    let mut c = cfg();
    c.virtio_mmio = vec![virtio("a", None, None), virtio("b", None, None)];
    let l = CellLayout::new(&c).unwrap();
    assert_eq!(
        l.virtio_mmio[0].window.base,
        crate::platform::VIRTIO_MMIO_POOL.0
    );
    assert_eq!(
        l.virtio_mmio[1].window.base,
        crate::platform::VIRTIO_MMIO_POOL.0 + 0x1000
    );
    assert_eq!(l.virtio_mmio[0].irq, crate::platform::FIRST_DYNAMIC_IRQ);
    assert_eq!(l.virtio_mmio[1].irq, crate::platform::FIRST_DYNAMIC_IRQ + 1);
}

#[test]
fn allocation_skips_fixed_reservations() {
    let mut c = cfg();
    c.virtio_mmio = vec![
        virtio(
            "fixed",
            Some(crate::platform::VIRTIO_MMIO_POOL.0),
            Some(crate::platform::FIRST_DYNAMIC_IRQ),
        ),
        virtio("auto", None, None),
    ];
    let l = CellLayout::new(&c).unwrap();
    assert_eq!(
        l.virtio_mmio[1].window.base,
        crate::platform::VIRTIO_MMIO_POOL.0 + 0x1000
    );
    assert_eq!(l.virtio_mmio[1].irq, crate::platform::FIRST_DYNAMIC_IRQ + 1);
}

#[test]
fn fixed_device_over_ram_is_a_collision_naming_both() {
    let mut c = cfg();
    c.virtio_mmio = vec![virtio("bad", Some(0x1000), None)];
    let err = CellLayout::new(&c).unwrap_err();
    assert_eq!(
        err.to_string(),
        "virtio-mmio bad at 0x1000..0x2000 collides with memory[0]"
    );
}

#[test]
fn taken_irq_is_refused() {
    let mut c = cfg();
    c.virtio_mmio = vec![virtio("a", None, Some(crate::platform::UART_IRQ))];
    assert_eq!(
        CellLayout::new(&c).unwrap_err().to_string(),
        "IOAPIC pin 4 for virtio-mmio a is already used by console"
    );
}

#[test]
fn out_of_range_irq_is_refused() {
    let mut c = cfg();
    c.virtio_mmio = vec![virtio("a", None, Some(24))];
    assert!(matches!(
        CellLayout::new(&c).unwrap_err(),
        LayoutError::IrqOutOfRange { pin: 24, .. }
    ));
}

#[test]
fn virtio_devices_share_pins_evenly_once_the_dynamic_pins_are_taken() {
    let mut c = cfg();
    c.virtio_mmio = (0..64)
        .map(|i| virtio(&format!("v{i}"), None, None))
        .collect();
    let l = CellLayout::new(&c).unwrap();
    let first = crate::platform::FIRST_DYNAMIC_IRQ;
    let dynamic = crate::platform::IRQ_LINES - first;
    for (i, slot) in (0u32..).zip(&l.virtio_mmio) {
        // Round robin over the dynamic pins: the one with the fewest
        // holders, the lowest on a tie.
        assert_eq!(slot.irq, first + i % dynamic, "{}", slot.id);
        assert!(l.irqs.is_shared(slot.irq));
    }
    let counts: Vec<usize> = (first..crate::platform::IRQ_LINES)
        .map(|p| l.irqs.holders(p).len())
        .collect();
    assert_eq!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap(),
        1
    );
    assert_eq!(counts.iter().sum::<usize>(), 64);
}

#[test]
fn a_fixed_pin_is_never_shared() {
    let mut c = cfg();
    c.virtio_mmio = vec![virtio("fixed", None, Some(10))];
    c.virtio_mmio
        .extend((0..40).map(|i| virtio(&format!("v{i}"), None, None)));
    let l = CellLayout::new(&c).unwrap();
    assert_eq!(l.irqs.holders(10), [Owner::VirtioMmio("fixed".into())]);
    assert!(!l.irqs.is_shared(10));
    assert!(l.virtio_mmio[1..].iter().all(|s| s.irq != 10));
}

#[test]
fn a_fixed_pin_on_a_shared_pin_is_refused_with_its_first_holder() {
    let mut c = cfg();
    c.virtio_mmio = vec![virtio("a", None, None), virtio("b", None, Some(6))];
    assert_eq!(
        CellLayout::new(&c).unwrap_err().to_string(),
        "IOAPIC pin 6 for virtio-mmio b is already used by virtio-mmio a"
    );
}

#[test]
fn bridges_share_pins_with_virtio_devices_once_pins_run_out() {
    let mut c = cfg();
    c.virtio_mmio = (0..17)
        .map(|i| virtio(&format!("v{i}"), None, None))
        .collect();
    c.pci_bridges = vec![bridge("pci0", PciHostKind::Ecam, None, (0, 0))];
    let l = CellLayout::new(&c).unwrap();
    let intx = l.pci_bridges[0].intx;
    // INTA takes the last free pin; INTB..INTD join the least-shared ones.
    assert_eq!(intx, [23, 6, 7, 8]);
    assert_eq!(
        l.irqs.holders(6),
        [
            Owner::VirtioMmio("v0".into()),
            Owner::PciBridge("pci0".into(), BridgePart::Intx(1))
        ]
    );
}

#[test]
fn an_exclusive_pin_runs_out_with_a_clear_error_when_every_pin_is_shared() {
    let mut c = cfg();
    c.virtio_mmio = (0..18)
        .map(|i| virtio(&format!("v{i}"), None, None))
        .collect();
    let mut l = CellLayout::new(&c).unwrap();
    // An extra UART takes pin 3 (below the dynamic ones); a second one
    // needs an exclusive dynamic pin, and all are shared.
    l.place(&DeviceConfig::Uart(uart("u0"))).unwrap();
    assert_eq!(
        l.place(&DeviceConfig::Uart(uart("u1"))).unwrap_err(),
        LayoutError::IrqsExhausted(Owner::Uart("u1".into()))
    );
}

#[test]
fn releasing_one_holder_keeps_a_shared_pin_for_the_others() {
    let mut irqs = IrqAllocator::new(8, 7);
    let (a, b) = (Owner::Uart("a".into()), Owner::Uart("b".into()));
    assert_eq!(irqs.allocate_shared(&a), Ok(7));
    assert_eq!(irqs.allocate_shared(&b), Ok(7));
    irqs.release(&a);
    assert_eq!(irqs.holders(7), std::slice::from_ref(&b));
    assert!(irqs.is_shared(7));
    irqs.release(&b);
    assert!(!irqs.is_shared(7));
    assert_eq!(irqs.allocate(&a), Ok(7), "an empty pin is free again");
}

#[test]
fn a_shared_allocation_never_joins_an_exclusive_pin() {
    let mut irqs = IrqAllocator::new(8, 7);
    assert_eq!(irqs.allocate(&Owner::Uart("a".into())), Ok(7));
    assert_eq!(
        irqs.allocate_shared(&Owner::Uart("b".into())),
        Err(LayoutError::IrqsExhausted(Owner::Uart("b".into())))
    );
}

#[test]
fn bridges_get_naturally_aligned_config_windows_of_the_right_size() {
    let mut c = cfg();
    c.pci_bridges = vec![
        bridge("e", PciHostKind::Ecam, None, (0, 3)),
        bridge("c", PciHostKind::Cam, None, (4, 4)),
    ];
    let l = CellLayout::new(&c).unwrap();
    let e = &l.pci_bridges[0];
    assert_eq!(e.config.size, 4 << 20);
    assert_eq!(e.config.base % (4 << 20), 0);
    let cam = &l.pci_bridges[1];
    assert_eq!(cam.config.size, 64 << 10);
    assert!(cam.config.base >= e.config.end());
    assert_ne!(e.mmio32.base, cam.mmio32.base);
    assert_eq!(e.intx.len(), 4);
    assert!(e.intx.iter().all(|p| !cam.intx.contains(p)));
}

#[test]
fn allocated_mmio64_window_is_in_the_64bit_pool_and_aligned() {
    let mut c = cfg();
    let mut b = bridge("e", PciHostKind::Ecam, None, (0, 0));
    b.mmio64 = Some(Window {
        base: 0,
        size: 1 << 30,
    });
    c.pci_bridges = vec![b];
    let l = CellLayout::new(&c).unwrap();
    let w = l.pci_bridges[0].mmio64.unwrap();
    assert!(w.base >= crate::platform::PCI_MMIO64_POOL.0);
    assert_eq!(w.base % (1 << 30), 0);
}

#[test]
fn address_map_release_frees_space_for_reuse() {
    let mut m = AddressMap::default();
    let w = m
        .allocate(
            Owner::Uart("a".into()),
            0x1000,
            0x1000,
            (0x1000, 0x3000),
            "pool",
        )
        .unwrap();
    assert!(m
        .allocate(
            Owner::Uart("b".into()),
            0x2000,
            0x1000,
            (0x1000, 0x3000),
            "pool"
        )
        .is_err());
    assert_eq!(m.release(&Owner::Uart("a".into())), 1);
    let again = m
        .allocate(
            Owner::Uart("b".into()),
            0x2000,
            0x1000,
            (0x1000, 0x3000),
            "pool",
        )
        .unwrap();
    assert_eq!(again.base, w.base);
}

#[test]
fn address_map_rejects_empty_and_wrapping_ranges() {
    let mut m = AddressMap::default();
    assert!(m
        .reserve(
            Owner::Uart("z".into()),
            Window {
                base: 0x1000,
                size: 0
            }
        )
        .is_err());
    assert!(m
        .reserve(
            Owner::Uart("w".into()),
            Window {
                base: u64::MAX,
                size: 2
            }
        )
        .is_err());
    assert!(m
        .allocate(Owner::Uart("h".into()), u64::MAX, 1, (1, u64::MAX), "pool")
        .is_err());
}

#[test]
fn irq_release_frees_pins() {
    let mut irqs = IrqAllocator::new(8, 6);
    assert_eq!(irqs.allocate(&Owner::Uart("a".into())), Ok(6));
    assert_eq!(irqs.allocate(&Owner::Uart("b".into())), Ok(7));
    assert!(irqs.allocate(&Owner::Uart("c".into())).is_err());
    irqs.release(&Owner::Uart("a".into()));
    assert_eq!(irqs.allocate(&Owner::Uart("c".into())), Ok(6));
}

fn uart(id: &str) -> crate::config::UartConfig {
    crate::config::UartConfig {
        id: id.into(),
        state: crate::config::DeviceState::Okay,
        port: None,
        irq: None,
        path: None,
    }
}
