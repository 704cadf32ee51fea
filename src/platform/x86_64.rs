//! The x86_64 cell platform: cellvm's own devices below 4 GiB, the pools
//! devices are placed from, the in-kernel IOAPIC and LAPIC, the legacy I/O
//! ports (docs/architecture.md, "The address map (x86_64)").

use super::{Platform, Trigger, CHANNEL_SIZE, PLATFORM_DEVICE_SIZE, UART_PORT_COUNT};

/// RAM may not be placed in `[DEVICE_WINDOW_START, DEVICE_WINDOW_END)`.
pub const DEVICE_WINDOW_START: u64 = 0xc000_0000;
/// End of the 32-bit device window (4 GiB).
pub const DEVICE_WINDOW_END: u64 = 0x1_0000_0000;
/// Pool for PCI 32-bit MMIO windows.
pub const PCI_MMIO32_POOL: (u64, u64) = (0xc000_0000, 0xd000_0000);
/// cellvm's own platform devices.
pub const PLATFORM_BASE: u64 = 0xd000_0000;
/// Debug-exit device (write a byte: the cell stops, cellvm exits with it).
pub const DEBUG_EXIT_BASE: u64 = PLATFORM_BASE;
/// Boot-timer device (write [`BOOT_TIMER_MAGIC`]: cellvm logs time since start).
pub const BOOT_TIMER_BASE: u64 = PLATFORM_BASE + 0x1000;
/// pvpanic device (`qemu,pvpanic-mmio`: the guest kernel reports a panic).
pub const PVPANIC_BASE: u64 = PLATFORM_BASE + 0x2000;
/// Paravirtual channel: registers + message buffer.
pub const CHANNEL_BASE: u64 = 0xd001_0000;
/// Pool for virtio-mmio devices (one page each).
pub const VIRTIO_MMIO_POOL: (u64, u64) = (0xd010_0000, 0xd020_0000);
/// Pool for the windows of add-on connectors.
pub const CONNECTOR_POOL: (u64, u64) = (0xd100_0000, 0xe000_0000);
/// Pool for PCI configuration windows (ECAM/CAM), below 4 GiB.
pub const PCI_CONFIG_POOL: (u64, u64) = (0xe000_0000, 0xfe00_0000);
/// IOAPIC registers.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// IOAPIC register window size.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Local APIC registers.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Local APIC window size.
pub const LAPIC_SIZE: u64 = 0x1000;
/// Pool for 64-bit prefetchable PCI windows (256 GiB .. 320 GiB).
pub const PCI_MMIO64_POOL: (u64, u64) = (0x40_0000_0000, 0x50_0000_0000);
/// Number of IOAPIC pins (KVM's in-kernel IOAPIC).
pub const IOAPIC_PINS: u32 = 24;
/// Console UART I/O port base.
pub const UART_PORT: u16 = 0x3f8;
/// Ports tried, in order, for an extra UART without a fixed port (COM2,
/// COM3, COM4).
pub const DEFAULT_UART_PORTS: [u16; 3] = [0x2f8, 0x3e8, 0x2e8];
/// The i8042 controller's ports (0x60..0x65: data, status/command; only
/// the reset command is served).
pub const I8042_PORT: u16 = 0x60;
/// Number of i8042 ports.
pub const I8042_PORT_COUNT: u16 = 5;
/// The CMOS RTC's index/data ports.
pub const CMOS_PORT: u16 = 0x70;
/// Number of CMOS ports.
pub const CMOS_PORT_COUNT: u16 = 2;
/// The ACPI power device's ports (sleep control/status, reset), which the
/// FADT names for kernels booted with ACPI tables.
pub const ACPI_POWER_PORT: u16 = 0x600;
/// Number of ACPI power ports.
pub const ACPI_POWER_PORT_COUNT: u16 = 2;
/// Where guest RAM starts (the first region's base when the config gives
/// none).
pub const RAM_BASE: u64 = 0;
/// RAM must end at or below this address (256 GiB).
pub const RAM_LIMIT: u64 = 0x40_0000_0000;
/// Interrupt lines devices are wired to: the IOAPIC's pins.
pub const IRQ_LINES: u32 = IOAPIC_PINS;
/// Where a virtio-mmio device with a fixed `base` may sit.
pub const VIRTIO_FIXED_WINDOW: (u64, u64) = (DEVICE_WINDOW_START, IOAPIC_BASE);
/// The platform devices in guest-physical memory: owner, base, size.
pub const FIXED_MMIO: [(Platform, u64, u64); 6] = [
    (Platform::DebugExit, DEBUG_EXIT_BASE, PLATFORM_DEVICE_SIZE),
    (Platform::BootTimer, BOOT_TIMER_BASE, PLATFORM_DEVICE_SIZE),
    (Platform::Pvpanic, PVPANIC_BASE, PLATFORM_DEVICE_SIZE),
    (Platform::Channel, CHANNEL_BASE, CHANNEL_SIZE),
    (Platform::Ioapic, IOAPIC_BASE, IOAPIC_SIZE),
    (Platform::Lapic, LAPIC_BASE, LAPIC_SIZE),
];
/// The platform devices in I/O port space: owner, first port, count.
pub const FIXED_PORTS: [(Platform, u16, u16); 4] = [
    (Platform::I8042, I8042_PORT, I8042_PORT_COUNT),
    (Platform::Cmos, CMOS_PORT, CMOS_PORT_COUNT),
    (Platform::AcpiPower, ACPI_POWER_PORT, ACPI_POWER_PORT_COUNT),
    (Platform::Console, UART_PORT, UART_PORT_COUNT),
];
/// Label of the interrupt controller node every interrupt refers to.
pub const INTC_LABEL: &str = "ioapic";
/// `#address-cells` of the interrupt controller node (the parent unit
/// address in an `interrupt-map` entry).
pub const INTC_ADDRESS_CELLS: usize = 0;

/// The PCI domain Linux gives the host bridge whose configuration window
/// starts at `config_base`: x86 Linux takes the base's low 32 bits.
pub fn pci_domain(config_base: u64) -> u32 {
    config_base as u32
}

/// The interrupt specifier of IOAPIC pin `line` (x86 DT binding:
/// `<pin type>`, type 1 = level high, 3 = edge rising).
pub fn irq_cells(line: u32, trigger: Trigger) -> Vec<u32> {
    let kind = match trigger {
        Trigger::Edge => 3,
        Trigger::LevelHigh => 1,
    };
    vec![line, kind]
}
/// Whether the platform has an I/O port space (extra UARTs sit there).
pub const HAS_PORT_IO: bool = true;
/// The console UART's I/O port (`None`: memory-mapped).
pub const CONSOLE_PORT: Option<u16> = Some(UART_PORT);
/// The console UART's MMIO base (`None`: at an I/O port).
pub const CONSOLE_MMIO: Option<u64> = None;
