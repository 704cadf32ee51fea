//! Guest-physical constants of the x86_64 cell platform: where cellvm's
//! own devices sit, the pools devices are placed from, and the IOAPIC pins
//! that are fixed. `layout` places devices with them; `config` checks fixed
//! addresses against them; device models and the device tree read them.

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
/// Bytes of the pvpanic register window the device tree describes (QEMU's
/// size; the layout reserves a whole platform page).
pub const PVPANIC_REG_SIZE: u64 = 2;
/// Size of each small platform device.
pub const PLATFORM_DEVICE_SIZE: u64 = 0x1000;
/// Paravirtual channel: registers + message buffer.
pub const CHANNEL_BASE: u64 = 0xd001_0000;
/// Size of the channel window.
pub const CHANNEL_SIZE: u64 = 0x1_0000;
/// Pool for virtio-mmio devices (one page each).
pub const VIRTIO_MMIO_POOL: (u64, u64) = (0xd010_0000, 0xd020_0000);
/// Size of one virtio-mmio device.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Pool for the windows of add-on connectors.
pub const CONNECTOR_POOL: (u64, u64) = (0xd100_0000, 0xe000_0000);
/// Window of a connector whose config gives no size (1 MiB).
pub const DEFAULT_CONNECTOR_SIZE: u64 = 0x10_0000;
/// Smallest connector window (64 KiB: sixteen virtio-mmio pages).
pub const MIN_CONNECTOR_SIZE: u64 = 0x1_0000;
/// Largest connector window (64 MiB).
pub const MAX_CONNECTOR_SIZE: u64 = 0x400_0000;
/// IOAPIC pins of a connector whose config gives no count.
pub const DEFAULT_CONNECTOR_IRQS: u32 = 4;
/// Most IOAPIC pins one connector may reserve.
pub const MAX_CONNECTOR_IRQS: u32 = 8;
/// 32-bit window of an add-on's PCI bridge whose table gives no `mmio32`
/// size (1 MiB, inside the connector's window).
pub const ADDON_MMIO32_SIZE: u64 = 0x10_0000;
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
/// Console UART IOAPIC pin.
pub const UART_IRQ: u32 = 4;
/// Paravirtual channel IOAPIC pin.
pub const CHANNEL_IRQ: u32 = 5;
/// First IOAPIC pin handed out to devices.
pub const FIRST_DYNAMIC_IRQ: u32 = 6;
/// Value the guest writes to the boot-timer device.
pub const BOOT_TIMER_MAGIC: u32 = 0x1234_5678;
/// Bytes of configuration space per bus for ECAM.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Bytes of configuration space per bus for CAM.
pub const CAM_BUS_SIZE: u64 = 1 << 16;
/// I/O ports a 16550 UART decodes.
pub const UART_PORT_COUNT: u16 = 8;
/// Ports tried, in order, for an extra UART without a fixed port (COM2,
/// COM3, COM4).
pub const DEFAULT_UART_PORTS: [u16; 3] = [0x2f8, 0x3e8, 0x2e8];
/// IOAPIC pin an extra UART gets by default (COM2's ISA IRQ), when free.
pub const DEFAULT_UART_IRQ: u32 = 3;
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
/// Size of an allocated 32-bit PCI window when the config gives none.
pub const DEFAULT_MMIO32_SIZE: u64 = 0x100_0000;
