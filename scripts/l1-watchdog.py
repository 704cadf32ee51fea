#!/usr/bin/env python3
"""Wakes the nested rig's L1 when QEMU's TCG loses an interrupt.

Usage: scripts/l1-watchdog.py MONITOR_SOCKET [--interval SECONDS]
                               [--heartbeat FILE] [--poke-after SECONDS]
                               [--hung-after SECONDS]

scripts/run-l1.sh starts this beside QEMU (whose human monitor listens on
MONITOR_SOCKET). Under QEMU's TCG with SVM, L1 now and then halts for good
after its KVM ran L2: the vCPU sits in HLT with interrupts enabled and a
deliverable vector pending in its LAPIC's IRR (nothing in service), and QEMU
never wakes it (docs/rig.md, "A lost wake-up in QEMU's TCG"). Every
INTERVAL seconds (default 5) this asks the monitor for each vCPU's state;
a vCPU seen in that state twice, half a second apart, gets a key press on
the emulated keyboard (an interrupt the halted vCPU does wake for, after
which it takes the pending vector too). Each wake-up is reported on stderr.

With --heartbeat, FILE is L1's second serial port, where guest/l1/init
writes a line every 2 s whatever the scenarios do. A heartbeat silent for
--poke-after seconds (default 10) gets the same key press, halted vCPU or
not, at most once per twice that time (other variants of the lost wake-up
leave nothing in IRR to recognise, and one stall was seen with the vCPU not
halted for most of it; a key press is harmless to a working L1). A heartbeat silent for
--hung-after seconds (default 90; before the first beat, twice that, for
L1's boot) means L1 is hung for good: the watchdog prints "L1 HUNG" and
quits QEMU, and scripts/run-l1.sh boots L1 again for the scenarios that did
not finish. A scenario cannot cause this: L1's own per-scenario watchdog
kills a stuck scenario, and the heartbeat runs beside it.
Exits when QEMU closes the monitor. Only the rig uses this; cellvm does not.
"""

import os

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


def halted(mon, cpu):
    mon.cmd(f"cpu {cpu}")
    return "HLT=1" in mon.cmd("info registers")


class Heartbeat:
    """When L1's heartbeat file last grew (monotonic seconds)."""

    def __init__(self, path):
        self.path = path
        self.size = -1
        self.seen = False
        self.changed = time.monotonic()

    def silent_for(self):
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = -1
        if size != self.size:
            self.seen = self.seen or size > 0
            self.size = size
            self.changed = time.monotonic()
        return time.monotonic() - self.changed


def parse_args(argv):
    opts = {"interval": 5.0, "heartbeat": None, "hung_after": 90.0, "poke_after": 10.0}
    names = {
        "--interval": "interval",
        "--heartbeat": "heartbeat",
        "--hung-after": "hung_after",
        "--poke-after": "poke_after",
    }
    rest = argv[2:]
    while rest:
        if rest[0] not in names or len(rest) < 2:
            raise ValueError(f"unknown or incomplete argument {rest[0]!r}")
        key = names[rest[0]]
        opts[key] = rest[1] if key == "heartbeat" else float(rest[1])
        rest = rest[2:]
    return opts


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        opts = parse_args(argv)
    except ValueError as e:
        print(f"[l1-watchdog] {e}", file=sys.stderr)
        return 2
    interval = opts["interval"]
    beat = Heartbeat(opts["heartbeat"]) if opts["heartbeat"] else None
    try:
        mon = Monitor(argv[1])
    except (OSError, EOFError) as e:
        print(f"[l1-watchdog] cannot reach the QEMU monitor at {argv[1]}: {e}", file=sys.stderr)
        return 1
    woken = 0
    last_poke = 0.0
    try:
        cpus = cpu_indices(mon)
        while True:
            time.sleep(interval)
            if beat is not None:
                silent = beat.silent_for()
                limit = opts["hung_after"] if beat.seen else 2 * opts["hung_after"]
                if silent >= limit:
                    print(
                        f"[l1-watchdog] L1 HUNG: no heartbeat for {silent:.0f} s "
                        f"after {woken} wake-up(s); quitting QEMU",
                        file=sys.stderr,
                        flush=True,
                    )
                    mon.cmd("quit")
                    return 0
                poke = opts["poke_after"]
                if beat.seen and silent >= poke and time.monotonic() - last_poke >= 2 * poke:
                    # One key press reaches every vCPU that can take it; the
                    # state only goes in the report (a stall was seen with
                    # the vCPU not halted for 30 s of it).
                    states = ", ".join(
                        f"vCPU {cpu} {'halted' if halted(mon, cpu) else 'running'}" for cpu in cpus
                    )
                    last_poke = time.monotonic()
                    mon.cmd("sendkey shift")
                    woken += 1
                    print(
                        f"[l1-watchdog] L1 ({states}) with no heartbeat for "
                        f"{silent:.0f} s (QEMU TCG lost wake-up?, docs/rig.md): poked it "
                        f"({woken} so far)",
                        file=sys.stderr,
                        flush=True,
                    )
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
