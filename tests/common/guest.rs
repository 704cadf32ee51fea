//! Tiny hand-assembled x86_64 guests for the fast KVM tests.
//!
//! cellvm enters a bare-metal ELF in 64-bit long mode with 0..4 GiB
//! identity-mapped, so these programs can poke ports and MMIO directly.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where test programs are loaded and entered.
pub const LOAD_ADDR: u64 = 0x20_0000;

/// A growing x86_64 machine-code buffer.
#[derive(Default, Clone)]
pub struct Asm {
    pub code: Vec<u8>,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }
    fn emit(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }
    /// mov dx, port
    pub fn mov_dx(&mut self, port: u16) -> &mut Self {
        let p = port.to_le_bytes();
        self.emit(&[0x66, 0xba, p[0], p[1]])
    }
    /// mov al, imm8
    pub fn mov_al(&mut self, v: u8) -> &mut Self {
        self.emit(&[0xb0, v])
    }
    /// out dx, al
    pub fn out_dx_al(&mut self) -> &mut Self {
        self.emit(&[0xee])
    }
    /// in al, dx
    pub fn in_al_dx(&mut self) -> &mut Self {
        self.emit(&[0xec])
    }
    /// in eax, dx
    pub fn in_eax_dx(&mut self) -> &mut Self {
        self.emit(&[0xed])
    }
    /// out dx, ax
    pub fn out_dx_ax(&mut self) -> &mut Self {
        self.emit(&[0x66, 0xef])
    }
    /// movabs rbx, imm64
    pub fn mov_rbx(&mut self, v: u64) -> &mut Self {
        self.emit(&[0x48, 0xbb]);
        self.emit(&v.to_le_bytes())
    }
    /// movabs rsi, imm64
    pub fn mov_rsi(&mut self, v: u64) -> &mut Self {
        self.emit(&[0x48, 0xbe]);
        self.emit(&v.to_le_bytes())
    }
    /// mov ecx, imm32
    pub fn mov_ecx(&mut self, v: u32) -> &mut Self {
        self.emit(&[0xb9]);
        self.emit(&v.to_le_bytes())
    }
    /// cld; rep outsb (RCX bytes from [RSI] to port DX)
    pub fn rep_outsb(&mut self) -> &mut Self {
        self.emit(&[0xfc, 0xf3, 0x6e])
    }
    /// movabs rdi, imm64
    pub fn mov_rdi(&mut self, v: u64) -> &mut Self {
        self.emit(&[0x48, 0xbf]);
        self.emit(&v.to_le_bytes())
    }
    /// cld; rep insb (RCX bytes from port DX to [RDI])
    pub fn rep_insb(&mut self) -> &mut Self {
        self.emit(&[0xfc, 0xf3, 0x6c])
    }
    /// movabs rax, imm64
    pub fn mov_rax(&mut self, v: u64) -> &mut Self {
        self.emit(&[0x48, 0xb8]);
        self.emit(&v.to_le_bytes())
    }
    /// mov byte [rbx], al
    pub fn store8_rbx_al(&mut self) -> &mut Self {
        self.emit(&[0x88, 0x03])
    }
    /// mov word [rbx], ax
    pub fn store16_rbx_ax(&mut self) -> &mut Self {
        self.emit(&[0x66, 0x89, 0x03])
    }
    /// mov dword [rbx], eax
    pub fn store32_rbx_eax(&mut self) -> &mut Self {
        self.emit(&[0x89, 0x03])
    }
    /// mov qword [rbx], rax
    pub fn store64_rbx_rax(&mut self) -> &mut Self {
        self.emit(&[0x48, 0x89, 0x03])
    }
    /// mov al, byte [rbx]
    pub fn load8_al_rbx(&mut self) -> &mut Self {
        self.emit(&[0x8a, 0x03])
    }
    /// mov eax, dword [rbx]
    pub fn load32_eax_rbx(&mut self) -> &mut Self {
        self.emit(&[0x8b, 0x03])
    }
    /// mov rax, qword [rbx]
    pub fn load64_rax_rbx(&mut self) -> &mut Self {
        self.emit(&[0x48, 0x8b, 0x03])
    }
    /// mov ax, word [rbx]
    pub fn load16_ax_rbx(&mut self) -> &mut Self {
        self.emit(&[0x66, 0x8b, 0x03])
    }
    /// Writes a byte to the console UART.
    pub fn putc(&mut self, c: u8) -> &mut Self {
        self.mov_dx(0x3f8).mov_al(c).out_dx_al()
    }
    /// Writes a string to the console UART.
    pub fn puts(&mut self, s: &str) -> &mut Self {
        for b in s.bytes() {
            self.putc(b);
        }
        self
    }
    /// Writes AL to the debug-exit device (stops the cell with code AL).
    pub fn exit_with_al(&mut self) -> &mut Self {
        self.mov_rbx(0xd000_0000).store8_rbx_al()
    }
    /// Stops the cell with `code` through the debug-exit device.
    pub fn exit(&mut self, code: u8) -> &mut Self {
        self.mov_al(code).exit_with_al()
    }
    /// Waits until the UART has a received byte (LSR bit 0), then reads it into AL.
    pub fn getc(&mut self) -> &mut Self {
        // mov dx,0x3fd; wait: in al,dx; test al,1; jz wait (back 5 bytes)
        self.mov_dx(0x3fd).in_al_dx();
        self.emit(&[0xa8, 0x01, 0x74, 0xfb]);
        self.mov_dx(0x3f8).in_al_dx()
    }
    /// Writes the 4 bytes of EAX to the console UART, least significant first
    /// (clobbers EAX and DX).
    pub fn put_eax(&mut self) -> &mut Self {
        self.mov_dx(0x3f8);
        for _ in 0..4 {
            self.out_dx_al();
            self.emit(&[0xc1, 0xe8, 0x08]); // shr eax, 8
        }
        self
    }
    /// mov dword [addr], value
    pub fn write32(&mut self, addr: u64, value: u32) -> &mut Self {
        self.mov_rbx(addr)
            .mov_rax(u64::from(value))
            .store32_rbx_eax()
    }
    /// Prints the dword at `addr` to the console (4 raw bytes).
    pub fn print32(&mut self, addr: u64) -> &mut Self {
        self.mov_rbx(addr).load32_eax_rbx().put_eax()
    }
    /// jmp $ (spin forever)
    pub fn spin(&mut self) -> &mut Self {
        self.emit(&[0xeb, 0xfe])
    }
    /// ud2
    pub fn ud2(&mut self) -> &mut Self {
        self.emit(&[0x0f, 0x0b])
    }
    /// hlt; jmp back to hlt
    pub fn halt_forever(&mut self) -> &mut Self {
        self.emit(&[0xf4, 0xeb, 0xfd])
    }
}

/// A minimal ELF64 x86_64 executable with one PT_LOAD segment holding `code`
/// at [`LOAD_ADDR`], entered at its first byte.
pub fn elf_image(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let offset = (EHDR + PHDR) as u64;
    let mut v = Vec::new();
    v.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    v.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    v.extend_from_slice(&0u32.to_le_bytes()); // flags
    v.extend_from_slice(&(EHDR as u16).to_le_bytes());
    v.extend_from_slice(&(PHDR as u16).to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes()); // phnum
    v.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    v.extend_from_slice(&0u16.to_le_bytes()); // shnum
    v.extend_from_slice(&0u16.to_le_bytes()); // shstrndx
    assert_eq!(v.len(), EHDR);
    v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    v.extend_from_slice(&7u32.to_le_bytes()); // RWX
    v.extend_from_slice(&offset.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // vaddr
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // paddr
    v.extend_from_slice(&(code.len() as u64).to_le_bytes());
    v.extend_from_slice(&(code.len() as u64).to_le_bytes());
    v.extend_from_slice(&0x1000u64.to_le_bytes());
    assert_eq!(v.len(), EHDR + PHDR);
    v.extend_from_slice(code);
    v
}

/// Writes the program as an ELF file into `dir` and returns its path.
pub fn write_elf(dir: &Path, name: &str, asm: &Asm) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create guest ELF");
    f.write_all(&elf_image(&asm.code)).expect("write guest ELF");
    path
}

/// Where the tiny virtio drivers keep queue 0: descriptor table, available
/// ring, used ring, and one 16-byte buffer (guest RAM, 16 entries).
pub const VQ_DESC: u64 = 0x30_0000;
pub const VQ_AVAIL: u64 = 0x30_1000;
pub const VQ_USED: u64 = 0x30_2000;
pub const VQ_BUF: u64 = 0x30_3000;

/// A virtio-mmio driver's setup of queue 0 (12 register writes, each an
/// exit: the status steps, VERSION_1, the queue's size and rings, ready,
/// DRIVER_OK) for the device whose window is at `base`.
pub fn virtio_mmio_driver_setup(asm: &mut Asm, base: u64) {
    let regs: [(u64, u32); 12] = [
        (0x070, 1),               // STATUS = ACKNOWLEDGE
        (0x070, 3),               // | DRIVER
        (0x024, 1),               // DRIVER_FEATURES_SEL = 1
        (0x020, 1),               // VIRTIO_F_VERSION_1 (bit 32)
        (0x070, 0xb),             // | FEATURES_OK
        (0x030, 0),               // QUEUE_SEL = 0
        (0x038, 16),              // QUEUE_NUM
        (0x080, VQ_DESC as u32),  // QUEUE_DESC_LOW
        (0x090, VQ_AVAIL as u32), // QUEUE_AVAIL_LOW
        (0x0a0, VQ_USED as u32),  // QUEUE_USED_LOW
        (0x044, 1),               // QUEUE_READY
        (0x070, 0xf),             // | DRIVER_OK
    ];
    for (off, v) in regs {
        asm.write32(base + off, v);
    }
}
