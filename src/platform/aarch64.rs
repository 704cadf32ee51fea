//! The aarch64 cell platform, laid out like QEMU's `virt` machine and Cloud
//! Hypervisor: devices below 1 GiB, RAM from 1 GiB, 64-bit PCI windows
//! high; an in-kernel GICv3 whose SPIs are the devices' interrupt lines
//! (docs/architecture.md, "The address map (aarch64)"). There is no I/O
//! port space: the console UART is a memory-mapped 16550.

use super::{Platform, Trigger, CHANNEL_SIZE, PLATFORM_DEVICE_SIZE};

/// RAM may not be placed in `[DEVICE_WINDOW_START, DEVICE_WINDOW_END)`.
pub const DEVICE_WINDOW_START: u64 = 0;
/// End of the device window: RAM starts here.
pub const DEVICE_WINDOW_END: u64 = RAM_BASE;
/// Where guest RAM starts (the first region's base when the config gives
/// none), as on QEMU `virt`.
pub const RAM_BASE: u64 = 0x4000_0000;
/// RAM must end at or below this address (256 GiB, below the 64-bit PCI
/// pool; KVM's default 40-bit IPA space reaches 1 TiB).
pub const RAM_LIMIT: u64 = 0x40_0000_0000;
/// GICv3 distributor.
pub const GIC_DIST_BASE: u64 = 0x0800_0000;
/// Size of the distributor's registers.
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// GICv3 ITS (its control frame and GITS_TRANSLATER's frame): the MSI
/// target of PCI functions.
pub const GIC_ITS_BASE: u64 = 0x0808_0000;
/// Size of the ITS's two 64 KiB frames.
pub const GIC_ITS_SIZE: u64 = 0x2_0000;
/// GICv3 redistributors: one RD + SGI frame pair per vCPU.
pub const GIC_REDIST_BASE: u64 = 0x0810_0000;
/// Size of one vCPU's redistributor frames.
pub const GIC_REDIST_SIZE_PER_CPU: u64 = 0x2_0000;
/// Most vCPUs whose redistributors fit the reserved region.
pub const GIC_MAX_CPUS: u64 = 64;
/// The console UART, a memory-mapped 16550 (byte registers).
pub const UART_MMIO_BASE: u64 = 0x0900_0000;
/// cellvm's own platform devices.
pub const PLATFORM_BASE: u64 = 0x0a00_0000;
/// Debug-exit device (write a byte: the cell stops, cellvm exits with it).
pub const DEBUG_EXIT_BASE: u64 = PLATFORM_BASE;
/// Boot-timer device.
pub const BOOT_TIMER_BASE: u64 = PLATFORM_BASE + 0x1000;
/// pvpanic device.
pub const PVPANIC_BASE: u64 = PLATFORM_BASE + 0x2000;
/// Paravirtual channel: registers + message buffer.
pub const CHANNEL_BASE: u64 = 0x0a01_0000;
/// Pool for virtio-mmio devices (one page each).
pub const VIRTIO_MMIO_POOL: (u64, u64) = (0x0a10_0000, 0x0a20_0000);
/// Pool for the windows of add-on connectors.
pub const CONNECTOR_POOL: (u64, u64) = (0x0b00_0000, 0x1000_0000);
/// Pool for PCI 32-bit MMIO windows.
pub const PCI_MMIO32_POOL: (u64, u64) = (0x1000_0000, 0x2000_0000);
/// Pool for PCI configuration windows (ECAM/CAM).
pub const PCI_CONFIG_POOL: (u64, u64) = (0x2000_0000, 0x4000_0000);
/// Pool for 64-bit prefetchable PCI windows (256 GiB .. 320 GiB).
pub const PCI_MMIO64_POOL: (u64, u64) = (0x40_0000_0000, 0x50_0000_0000);
/// Interrupt lines devices are wired to: GIC SPIs 0..IRQ_LINES (INTIDs
/// 32..32 + IRQ_LINES).
pub const IRQ_LINES: u32 = 64;
/// Interrupts the in-kernel GIC is created with (SGIs + PPIs + SPIs; a
/// multiple of 32).
pub const GIC_NR_IRQS: u32 = 32 + IRQ_LINES;
/// Architected timer PPIs (secure physical, non-secure physical, virtual,
/// hypervisor), as the `arm,armv8-timer` binding orders them.
pub const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// Ports tried for an extra UART without a fixed port: none, there is no
/// I/O port space (an add-on board's memory-mapped UART works).
pub const DEFAULT_UART_PORTS: [u16; 0] = [];
/// Where a virtio-mmio device with a fixed `base` may sit.
pub const VIRTIO_FIXED_WINDOW: (u64, u64) = (PLATFORM_BASE, DEVICE_WINDOW_END);
/// The platform devices in guest-physical memory: owner, base, size.
pub const FIXED_MMIO: [(Platform, u64, u64); 8] = [
    (Platform::GicDistributor, GIC_DIST_BASE, GIC_DIST_SIZE),
    (Platform::GicIts, GIC_ITS_BASE, GIC_ITS_SIZE),
    (
        Platform::GicRedistributors,
        GIC_REDIST_BASE,
        GIC_REDIST_SIZE_PER_CPU * GIC_MAX_CPUS,
    ),
    (Platform::Console, UART_MMIO_BASE, PLATFORM_DEVICE_SIZE),
    (Platform::DebugExit, DEBUG_EXIT_BASE, PLATFORM_DEVICE_SIZE),
    (Platform::BootTimer, BOOT_TIMER_BASE, PLATFORM_DEVICE_SIZE),
    (Platform::Pvpanic, PVPANIC_BASE, PLATFORM_DEVICE_SIZE),
    (Platform::Channel, CHANNEL_BASE, CHANNEL_SIZE),
];
/// The platform devices in I/O port space: none.
pub const FIXED_PORTS: [(Platform, u16, u16); 0] = [];
/// Whether the platform has an I/O port space (extra UARTs sit there).
pub const HAS_PORT_IO: bool = false;
/// The console UART's I/O port (`None`: memory-mapped).
pub const CONSOLE_PORT: Option<u16> = None;
/// The console UART's MMIO base (`None`: at an I/O port).
pub const CONSOLE_MMIO: Option<u64> = Some(UART_MMIO_BASE);
/// Label of the interrupt controller node every interrupt refers to.
pub const INTC_LABEL: &str = "gic";
/// `#address-cells` of the GIC node (the parent unit address in an
/// `interrupt-map` entry).
pub const INTC_ADDRESS_CELLS: usize = 2;
/// GIC binding: interrupt type SPI.
pub const GIC_SPI: u32 = 0;
/// GIC binding: interrupt type PPI.
pub const GIC_PPI: u32 = 1;

/// The PCI domain of the host bridge whose configuration window starts at
/// `config_base`, which the device tree gives it (`linux,pci-domain`):
/// Linux keeps only 16 bits of that property, so the base's bits 16..32
/// (windows are at least 64 KiB aligned inside [`PCI_CONFIG_POOL`], so the
/// numbers are distinct).
pub fn pci_domain(config_base: u64) -> u32 {
    ((config_base >> 16) & 0xffff) as u32
}

/// The interrupt specifier of SPI `line` (GIC binding: `<type number
/// flags>`, flags 1 = edge rising, 4 = level high).
pub fn irq_cells(line: u32, trigger: Trigger) -> Vec<u32> {
    let flags = match trigger {
        Trigger::Edge => 1,
        Trigger::LevelHigh => 4,
    };
    vec![GIC_SPI, line, flags]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_devices_sit_below_ram_without_overlapping() {
        let mut spans: Vec<(u64, u64)> = FIXED_MMIO.iter().map(|&(_, b, s)| (b, b + s)).collect();
        spans.extend([
            VIRTIO_MMIO_POOL,
            CONNECTOR_POOL,
            PCI_MMIO32_POOL,
            PCI_CONFIG_POOL,
        ]);
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
        assert!(spans.iter().all(|&(_, end)| end <= RAM_BASE));
        assert!(RAM_LIMIT <= PCI_MMIO64_POOL.0);
    }

    #[test]
    fn spi_specifiers_follow_the_gic_binding() {
        assert_eq!(irq_cells(7, Trigger::LevelHigh), [0, 7, 4]);
        assert_eq!(irq_cells(4, Trigger::Edge), [0, 4, 1]);
        assert_eq!(GIC_NR_IRQS % 32, 0);
    }

    #[test]
    fn pci_domains_of_config_windows_fit_16_bits_and_differ() {
        assert_eq!(pci_domain(PCI_CONFIG_POOL.0), 0x2000);
        assert_eq!(pci_domain(PCI_CONFIG_POOL.0 + 0x1_0000), 0x2001);
        assert!(pci_domain(PCI_CONFIG_POOL.1 - 0x1_0000) <= 0xffff);
    }
}
