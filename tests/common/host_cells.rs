//! Cells of the host's KVM run with the `cellvm` binary: a tiny guest that
//! prints `ready` and then polls the console until a byte arrives (a
//! steady stream of port I/O exits), in a private runtime directory.

use super::guest::{write_elf, Asm};
use std::io::{BufRead, BufReader, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const CELLVM: &str = env!("CARGO_BIN_EXE_cellvm");

/// A test directory: the runtime directory, the guest and a 64 KiB image.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub elf: PathBuf,
}

impl Rig {
    pub fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut asm = Asm::new();
        // Announce, then wait for one console byte and exit with it.
        asm.puts("ready\n").getc().exit_with_al();
        let elf = write_elf(dir.path(), "wait.elf", &asm);
        std::fs::write(dir.path().join("disk.img"), vec![0u8; 64 * 1024]).unwrap();
        Rig { dir, elf }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes cell `name`: `cpus` lines after `count = 1`, then `tail`.
    pub fn cell(&self, name: &str, cpus: &str, tail: &str) -> PathBuf {
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\n[cpus]\ncount = 1\n{cpus}\n[[memory]]\nsize = \"64M\"\n\
                 [kernel]\npath = \"{}\"\n{tail}",
                self.elf.display()
            ),
        )
        .unwrap();
        path
    }

    pub fn cellvm(&self, args: &[&str]) -> Output {
        Command::new(CELLVM)
            .args(args)
            .env("CELLVM_RUNTIME_DIR", self.dir.path())
            .output()
            .unwrap()
    }

    /// Spawns `cellvm run cell EXTRA...` without waiting for the guest.
    pub fn spawn(&self, cell: &Path, extra: &[&str]) -> CellProcess {
        let child = Command::new(CELLVM)
            .arg("run")
            .arg(cell)
            .args(extra)
            .env("CELLVM_RUNTIME_DIR", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        CellProcess(Some(child))
    }

    /// Starts `cell` and waits until its guest is running.
    pub fn start(&self, cell: &Path) -> CellProcess {
        let mut child = self.spawn(cell, &[]);
        wait_ready(&mut child);
        child
    }

    /// `cellvm run cell` expected to be refused: its stderr.
    pub fn refused(&self, cell: &Path) -> String {
        let out = self.cellvm(&["run", cell.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        err
    }
}

/// A running `cellvm run`, killed and reaped when dropped: a test that
/// fails half-way leaves no cell spinning on the host (one that did slowed
/// every later nested run for hours).
pub struct CellProcess(Option<Child>);

impl CellProcess {
    /// Guards a `cellvm` process spawned elsewhere.
    pub fn new(child: Child) -> CellProcess {
        CellProcess(Some(child))
    }

    /// Waits for the process to exit and collects its output.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        let child = self
            .0
            .take()
            .expect("a CellProcess holds its child until now");
        child.wait_with_output()
    }
}

impl Deref for CellProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0
            .as_ref()
            .expect("a CellProcess holds its child until consumed")
    }
}

impl DerefMut for CellProcess {
    fn deref_mut(&mut self) -> &mut Child {
        self.0
            .as_mut()
            .expect("a CellProcess holds its child until consumed")
    }
}

impl Drop for CellProcess {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            // Already exited is fine: kill fails, wait reaps.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for the guest's `ready` line.
pub fn wait_ready(child: &mut Child) {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n", "the cell did not start");
}

/// Lets a waiting cell exit (status 0x41).
pub fn stop(mut child: CellProcess) {
    child.stdin.as_mut().unwrap().write_all(b"A").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0x41));
}
