#!/usr/bin/env python3
"""Wakes the nested rig's L1 when QEMU's TCG loses an interrupt.

Usage: scripts/l1-watchdog.py MONITOR_SOCKET [--interval SECONDS]

scripts/run-l1.sh starts this beside QEMU (whose human monitor listens on
MONITOR_SOCKET). Under QEMU's TCG with SVM, L1 now and then halts for good
after its KVM ran L2: the vCPU sits in HLT with interrupts enabled and a
deliverable vector pending in its LAPIC's IRR (nothing in service), and QEMU
never wakes it (docs/rig.md, "A lost wake-up in QEMU's TCG"). Every
INTERVAL seconds (default 5) this asks the monitor for each vCPU's state;
a vCPU seen in that state twice, half a second apart, gets a key press on
the emulated keyboard (an interrupt the halted vCPU does wake for, after
which it takes the pending vector too). Each wake-up is reported on stderr.
Exits when QEMU closes the monitor. Only the rig uses this; cellvm does not.
"""

import re
import socket
import sys
import time

PROMPT = b"(qemu) "


class Monitor:
    def __init__(self, path, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.sock.settimeout(10.0)
        self.read_prompt()

    def read_prompt(self):
        buf = b""
        while not buf.endswith(PROMPT):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("monitor closed")
            buf += chunk
        return buf.decode(errors="replace")

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self.read_prompt()


def cpu_indices(mon):
    out = mon.cmd("info cpus")
    found = [int(m) for m in re.findall(r"CPU #(\d+)", out)]
    return found or [0]


def lost_wakeup(mon, cpu):
    """The pending vector if `cpu` is halted with a deliverable interrupt
    in IRR and nothing in service, else None."""
    mon.cmd(f"cpu {cpu}")
    regs = mon.cmd("info registers")
    rflags = re.search(r"RFL=([0-9a-f]+)", regs)
    # Halted, with interrupts enabled (RFLAGS.IF, bit 9).
    if "HLT=1" not in regs or not rflags or not int(rflags.group(1), 16) & 0x200:
        return None
    lapic = mon.cmd("info lapic")
    irr = re.search(r"^IRR\s+(.*)$", lapic, re.M)
    isr = re.search(r"^ISR\s+(.*)$", lapic, re.M)
    if not irr or not isr:
        return None
    pending = irr.group(1).strip()
    if not pending or pending.startswith("(none)") or not isr.group(1).strip().startswith("(none)"):
        return None
    return pending


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    interval = 5.0
    if len(argv) >= 4 and argv[2] == "--interval":
        interval = float(argv[3])
    try:
        mon = Monitor(argv[1])
    except (OSError, EOFError) as e:
        print(f"[l1-watchdog] cannot reach the QEMU monitor at {argv[1]}: {e}", file=sys.stderr)
        return 1
    woken = 0
    try:
        cpus = cpu_indices(mon)
        while True:
            time.sleep(interval)
            for cpu in cpus:
                first = lost_wakeup(mon, cpu)
                if first is None:
                    continue
                time.sleep(0.5)
                if lost_wakeup(mon, cpu) is None:
                    continue
                mon.cmd("sendkey shift")
                woken += 1
                print(
                    f"[l1-watchdog] L1 vCPU {cpu} was halted with interrupt {first} pending "
                    f"(QEMU TCG lost wake-up, docs/rig.md): woke it ({woken} so far)",
                    file=sys.stderr,
                    flush=True,
                )
    except (OSError, EOFError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
