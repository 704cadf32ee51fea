//! The cell platform: where cellvm's own devices sit, the pools devices
//! are placed from, the interrupt lines that are fixed, and how the device
//! tree names an interrupt. `layout` places devices with these; `config`
//! checks fixed addresses against them; device models and the device tree
//! read them.
//!
//! The constants that differ between architectures live in [`x86_64`] and
//! [`aarch64`]; the build's target architecture picks which one this
//! module re-exports. Both are compiled on every target, so the other
//! architecture's map is checked by the same unit tests.

pub mod aarch64;
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(not(target_arch = "aarch64"))]
pub use x86_64::*;

/// cellvm's fixed platform devices, whose ids no configured or attached
/// device may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// The console UART.
    Console,
    /// The debug-exit device.
    DebugExit,
    /// The boot-timer device.
    BootTimer,
    /// The pvpanic device.
    Pvpanic,
    /// The paravirtual channel.
    Channel,
    /// The IOAPIC (x86_64).
    Ioapic,
    /// The local APIC (x86_64).
    Lapic,
    /// The i8042, reset only (x86_64).
    I8042,
    /// The CMOS RTC (x86_64).
    Cmos,
    /// The ACPI sleep and reset registers (x86_64).
    AcpiPower,
    /// The GICv3 distributor (aarch64).
    GicDistributor,
    /// The GICv3 redistributors, one frame pair per vCPU (aarch64).
    GicRedistributors,
    /// The GICv3 ITS, the MSI target of PCI functions (aarch64).
    GicIts,
}

impl Platform {
    /// Every platform device of every architecture.
    pub const ALL: [Platform; 13] = [
        Platform::Console,
        Platform::DebugExit,
        Platform::BootTimer,
        Platform::Pvpanic,
        Platform::Channel,
        Platform::Ioapic,
        Platform::Lapic,
        Platform::I8042,
        Platform::Cmos,
        Platform::AcpiPower,
        Platform::GicDistributor,
        Platform::GicRedistributors,
        Platform::GicIts,
    ];

    /// The device's id (`debug-exit`).
    pub fn name(self) -> &'static str {
        match self {
            Platform::Console => "console",
            Platform::DebugExit => "debug-exit",
            Platform::BootTimer => "boot-timer",
            Platform::Pvpanic => "pvpanic",
            Platform::Channel => "channel",
            Platform::Ioapic => "ioapic",
            Platform::Lapic => "lapic",
            Platform::I8042 => "i8042",
            Platform::Cmos => "cmos",
            Platform::AcpiPower => "acpi-power",
            Platform::GicDistributor => "gic-distributor",
            Platform::GicRedistributors => "gic-redistributors",
            Platform::GicIts => "gic-its",
        }
    }
}

/// How a device drives its interrupt line, as the device tree says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A pulse per event (the console UART, the channel: KVM irqfds).
    Edge,
    /// Held while the device wants service (lines devices share).
    LevelHigh,
}

/// Bytes of the pvpanic register window the device tree describes (QEMU's
/// size; the layout reserves a whole platform page).
pub const PVPANIC_REG_SIZE: u64 = 2;
/// Size of each small platform device.
pub const PLATFORM_DEVICE_SIZE: u64 = 0x1000;
/// Size of the channel window.
pub const CHANNEL_SIZE: u64 = 0x1_0000;
/// Size of one virtio-mmio device.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
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
/// IOAPIC pin an extra UART gets by default (COM2's ISA IRQ), when free.
pub const DEFAULT_UART_IRQ: u32 = 3;
/// Size of an allocated 32-bit PCI window when the config gives none.
pub const DEFAULT_MMIO32_SIZE: u64 = 0x100_0000;
