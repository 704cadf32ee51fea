//! The validated cell description. Everything in here has passed validation:
//! later stages (layout, fdt, vmm) may rely on the invariants documented on
//! each field without checking them again.

use super::origins::Origins;
use std::path::PathBuf;

/// A validated cell configuration, produced by [`crate::config::load`] or
/// [`crate::config::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellConfig {
    /// Cell name: 1-32 characters of `[A-Za-z0-9_-]`.
    pub name: String,
    /// The file this configuration was read from (for messages), if any.
    pub source: Option<PathBuf>,
    /// vCPUs and their host CPU pinning.
    pub cpus: CpuConfig,
    /// Guest RAM regions, sorted by base, page aligned, non-overlapping, outside
    /// the device window. The first one starts at guest physical 0.
    pub memory: Vec<MemoryRegion>,
    /// What to boot.
    pub kernel: KernelConfig,
    /// Where the console goes.
    pub console: ConsoleConfig,
    /// Statically configured virtio-mmio devices.
    pub virtio_mmio: Vec<VirtioMmioConfig>,
    /// Statically configured virtual PCI host bridges.
    pub pci_bridges: Vec<PciBridgeConfig>,
    /// Extra 16550 UARTs under the ISA bus (the console is not one of them).
    pub uarts: Vec<UartConfig>,
    /// Connectors add-on boards plug into at run time (docs/addons.md).
    pub connectors: Vec<ConnectorConfig>,
    /// Where each entry came from, for errors found after validation
    /// (placement collisions).
    pub origins: Origins,
}

impl CellConfig {
    /// The RAM regions as address windows (sorted by base).
    pub fn memory_windows(&self) -> Vec<Window> {
        self.memory
            .iter()
            .map(|r| Window {
                base: r.base,
                size: r.size,
            })
            .collect()
    }

    /// Every configured device, in placement order: virtio-mmio devices,
    /// PCI host bridges, UARTs (each in file order).
    pub fn devices(&self) -> Vec<DeviceConfig> {
        let virtio = self
            .virtio_mmio
            .iter()
            .cloned()
            .map(DeviceConfig::VirtioMmio);
        let bridges = self
            .pci_bridges
            .iter()
            .cloned()
            .map(DeviceConfig::PciBridge);
        let uarts = self.uarts.iter().cloned().map(DeviceConfig::Uart);
        virtio.chain(bridges).chain(uarts).collect()
    }
}

/// One device, as a table of a cell file (`[[virtio_mmio]]`,
/// `[[pci_bridge]]`, `[[uart]]`) or a device description file (which holds
/// exactly one such table). Boot-time devices and runtime attachments are
/// the same type, validated by the same code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceConfig {
    /// A virtio-mmio transport.
    VirtioMmio(VirtioMmioConfig),
    /// A generic PCI host bridge with functions behind it.
    PciBridge(PciBridgeConfig),
    /// A 16550 UART under the ISA bus.
    Uart(UartConfig),
}

/// Whether a device is in use (docs/config.md, `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceState {
    /// In the device tree as `okay`; cellvm serves it.
    #[default]
    Okay,
    /// In the device tree as `reserved`: it exists but this cell does not
    /// drive it now (another side may; the seeds' shared flash). Its
    /// addresses and IRQs are reserved; cellvm serves no model and holds
    /// no backing resource for it.
    Reserved,
    /// In the device tree as `disabled`; otherwise as `Reserved`.
    Disabled,
}

impl DeviceState {
    /// The device tree `status` and config value: `okay`, `reserved`,
    /// `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Okay => "okay",
            DeviceState::Reserved => "reserved",
            DeviceState::Disabled => "disabled",
        }
    }
}

impl DeviceConfig {
    /// The device's state.
    pub fn state(&self) -> DeviceState {
        match self {
            DeviceConfig::VirtioMmio(d) => d.state,
            DeviceConfig::PciBridge(d) => d.state,
            DeviceConfig::Uart(d) => d.state,
        }
    }

    /// The device id.
    pub fn id(&self) -> &str {
        match self {
            DeviceConfig::VirtioMmio(d) => &d.id,
            DeviceConfig::PciBridge(d) => &d.id,
            DeviceConfig::Uart(d) => &d.id,
        }
    }

    /// The kind as `cellvm devices` shows it: `virtio-mmio`, `pci-bridge`
    /// or `uart`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            DeviceConfig::VirtioMmio(_) => "virtio-mmio",
            DeviceConfig::PciBridge(_) => "pci-bridge",
            DeviceConfig::Uart(_) => "uart",
        }
    }
}

/// An extra 16550 UART at an I/O port, under the device tree's ISA bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UartConfig {
    /// Unique device id.
    pub id: String,
    /// `okay`, `reserved` or `disabled`.
    pub state: DeviceState,
    /// First of its 8 I/O ports (a multiple of 8), or the first free of
    /// [`crate::platform::DEFAULT_UART_PORTS`].
    pub port: Option<u16>,
    /// IOAPIC pin, or [`crate::platform::DEFAULT_UART_IRQ`] if free, else
    /// allocated.
    pub irq: Option<u32>,
    /// Where its output is appended (resolved), or `None` for
    /// `RUNTIME_DIR/CELL.ID.out`.
    pub path: Option<PathBuf>,
}

/// A connector: a window of guest-physical address space and IOAPIC pins
/// reserved for the add-on board plugged into it (docs/addons.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// Unique id within the cell, also the node's device-tree label (`&j1`
    /// in an add-on's overlay): 1-31 characters of `[a-z0-9_]`, starting
    /// with a letter.
    pub id: String,
    /// Size of the window (a power of two from 64 KiB to 64 MiB); add-on
    /// devices are placed in it.
    pub size: u64,
    /// IOAPIC pins reserved for the add-on's devices (1 to
    /// [`crate::platform::MAX_CONNECTOR_IRQS`]).
    pub irqs: u32,
}

/// vCPU configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuConfig {
    /// Number of vCPUs, 1..=[`crate::config::MAX_VCPUS`].
    pub count: u8,
    /// Host CPU for each vCPU (same length as `count`), or `None` for no pinning.
    pub pin: Option<Vec<usize>>,
    /// Whether the pinned host CPUs may also be pinned by other cells that
    /// say so too (`cpus.shared = true`); by default a pinned host CPU is
    /// the cell's alone (docs/partitioning.md).
    pub shared: bool,
}

/// One guest RAM region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Guest physical base address (page aligned).
    pub base: u64,
    /// Size in bytes (page aligned, non-zero).
    pub size: u64,
    /// Touch every page before the first vCPU runs: no page faults later,
    /// the memory is taken from the host at start (docs/partitioning.md).
    pub prefault: bool,
    /// Lock the region in host RAM (`mlock`): never swapped; implies the
    /// pages are faulted in at start.
    pub lock: bool,
}

impl MemoryRegion {
    /// One past the last byte of the region.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// Kernel image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A Linux bzImage, booted through the x86 boot protocol.
    BzImage,
    /// An uncompressed Linux kernel (`vmlinux`, an ELF64 image with "Linux"
    /// notes): its segments are loaded where they are linked and it is
    /// entered at its 64-bit entry point through the x86 boot protocol's
    /// boot_params, so the guest skips the bzImage's self-decompression.
    Vmlinux,
    /// A bare-metal ELF64 image, entered in 64-bit long mode at its entry point.
    Elf,
    /// An arm64 Linux `Image` (magic `ARM\x64` at 0x38), loaded at the start
    /// of RAM and entered with the device tree's address in x0.
    Image,
}

impl KernelFormat {
    /// The formats cellvm boots on the architecture it was built for.
    pub const NATIVE: &'static [KernelFormat] = if cfg!(target_arch = "aarch64") {
        &[KernelFormat::Image]
    } else {
        &[
            KernelFormat::BzImage,
            KernelFormat::Vmlinux,
            KernelFormat::Elf,
        ]
    };

    /// The name a cell file gives the format (`kernel.format`).
    pub fn name(self) -> &'static str {
        match self {
            KernelFormat::BzImage => "bzimage",
            KernelFormat::Vmlinux => "vmlinux",
            KernelFormat::Elf => "elf",
            KernelFormat::Image => "image",
        }
    }
}

/// What the cell boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// Kernel image path (resolved relative to the config file; exists).
    pub path: PathBuf,
    /// Image format (given, or detected from the file's magic).
    pub format: KernelFormat,
    /// Optional initrd path (resolved; exists). Only for Linux kernels (bzImage, vmlinux).
    pub initrd: Option<PathBuf>,
    /// Kernel command line (printable ASCII, shorter than the boot protocol's limit).
    pub cmdline: String,
    /// Write ACPI tables for a Linux kernel (default); `false` for a kernel
    /// built with both ACPI and a device tree that should use the tree
    /// alone. Always `false` for a bare-metal ELF image.
    pub acpi: bool,
}

/// Where console output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// cellvm's standard output.
    Stdout,
    /// Appended to a file (created if missing).
    File(PathBuf),
    /// Discarded.
    None,
}

/// Where console input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleInput {
    /// cellvm's standard input.
    Stdin,
    /// No input.
    None,
}

/// Console (16550 UART at I/O port 0x3f8, IRQ 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Output sink.
    pub output: ConsoleOutput,
    /// Input source.
    pub input: ConsoleInput,
}

/// The kind of a virtio device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioKind {
    /// Entropy source.
    Rng,
    /// Block device.
    Block,
    /// Console.
    Console,
}

/// A statically configured virtio-mmio device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMmioConfig {
    /// Unique device id within the cell (`[A-Za-z0-9_-]`, 1-32 characters).
    pub id: String,
    /// `okay`, `reserved` or `disabled`.
    pub state: DeviceState,
    /// Device kind.
    pub kind: VirtioKind,
    /// Fixed MMIO base (page aligned, inside the device window), or allocated.
    pub base: Option<u64>,
    /// Fixed IOAPIC pin, or allocated.
    pub irq: Option<u32>,
    /// Backend settings (which keys apply depends on `kind`).
    pub backend: VirtioBackendConfig,
}

/// Backend settings of a virtio device (docs/virtio.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioBackendConfig {
    /// Block: the raw image (required, exists). Console: append output to this file.
    pub path: Option<PathBuf>,
    /// Block: open the image read-only.
    pub read_only: bool,
    /// Block: the serial the disk reports (default: the device id).
    pub serial: Option<String>,
    /// Console: listen on this Unix socket (output and input).
    pub socket: Option<PathBuf>,
    /// Console: allocate a pseudo-terminal and make this path a symlink to
    /// it (output and input).
    pub pty: Option<PathBuf>,
    /// Size of every queue the driver may use (a power of two, 16 to 1024;
    /// default 256).
    pub queue_size: Option<u16>,
    /// Whether queue notifications go through KVM ioeventfds and a worker
    /// thread (the default) or exit to the vCPU thread (`ioeventfd = false`,
    /// like QEMU's device property of that name: for diagnostics and
    /// benchmarks).
    pub ioeventfd: bool,
}

/// A virtio device behind a PCI host bridge (virtio-pci transport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioPciConfig {
    /// Device kind.
    pub kind: VirtioKind,
    /// Backend settings.
    pub backend: VirtioBackendConfig,
}

/// The flavour of a generic PCI host bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciHostKind {
    /// `pci-host-ecam-generic`: 1 MiB of config space per bus.
    Ecam,
    /// `pci-host-cam-generic`: 64 KiB of config space per bus.
    Cam,
}

/// An address window `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First address.
    pub base: u64,
    /// Size in bytes (non-zero).
    pub size: u64,
}

impl Window {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// A statically configured virtual PCI host bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciBridgeConfig {
    /// Unique id within the cell.
    pub id: String,
    /// `okay`, `reserved` or `disabled`.
    pub state: DeviceState,
    /// ECAM or CAM.
    pub kind: PciHostKind,
    /// Fixed config-space base (below 4 GiB), or allocated.
    pub config_base: Option<u64>,
    /// First bus number.
    pub bus_start: u8,
    /// Last bus number (>= `bus_start`).
    pub bus_end: u8,
    /// Fixed 32-bit MMIO window; with `base` 0 only a size (the layout
    /// allocates it); `None`: 16 MiB, allocated.
    pub mmio32: Option<Window>,
    /// Optional 64-bit prefetchable MMIO window size or fixed window.
    pub mmio64: Option<Window>,
    /// PCI functions behind the bridge: on its first bus, or on the
    /// secondary bus of a PCI-to-PCI bridge function on the first bus.
    pub devices: Vec<PciDeviceConfig>,
}

/// A PCI function behind a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDeviceConfig {
    /// Bus number: the bridge's `bus_start` (the default) or the
    /// `secondary` bus of one of its PCI-to-PCI bridges.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub slot: u8,
    /// Function number, 0..=7; functions above 0 need function 0 in the same slot.
    pub function: u8,
    /// What the function is.
    pub kind: PciDeviceKind,
}

/// The kinds of PCI function cellvm can emulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PciDeviceKind {
    /// cellvm's test device (1b36:00ce): a register BAR and INTx (docs/pci.md).
    Test,
    /// An ivshmem 2.0 shared-memory device (docs/ivshmem.md).
    Ivshmem(IvshmemConfig),
    /// A virtio device on the virtio-pci transport (docs/virtio.md).
    Virtio(VirtioPciConfig),
    /// A PCI-to-PCI bridge (type-1 header) on the first bus, leading to
    /// bus `secondary` (docs/pci.md).
    PciBridge {
        /// The bus behind it (its secondary and subordinate bus).
        secondary: u8,
    },
}

/// An ivshmem 2.0 device: memory shared with peer cells plus doorbells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvshmemConfig {
    /// Name of the shared region; peers use the same name.
    pub region: String,
    /// This cell's peer id in the region, below `max_peers`.
    pub peer_id: u16,
    /// Number of peers the region has room for (2..=16).
    pub max_peers: u16,
    /// Size of the section every peer can read and write (page aligned, may be 0).
    pub rw_size: u64,
    /// Size of each peer's output section (page aligned, may be 0).
    pub output_size: u64,
}

impl Default for VirtioBackendConfig {
    /// No backend keys: nothing but the defaults (ioeventfds on).
    fn default() -> Self {
        VirtioBackendConfig {
            path: None,
            read_only: false,
            serial: None,
            socket: None,
            pty: None,
            queue_size: None,
            ioeventfd: true,
        }
    }
}

/// Largest vCPU count a cell may have.
pub const MAX_VCPUS: u8 = 64;

/// How [`crate::config::load`] and [`crate::config::parse`] treat the files a config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Check the host: that the kernel, initrd and disk images exist and are
    /// readable (and detect the kernel format from the image), that the
    /// directories of output files, sockets and pty links exist, and that
    /// pinned host CPUs exist. When `false` (e.g. `cellvm dtb`),
    /// nothing is read and the format defaults to bzImage unless given.
    pub check_files: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { check_files: true }
    }
}
