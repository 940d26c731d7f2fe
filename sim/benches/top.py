"""cocotb bench: the Accelerator kernel driven like a host drives an Alveo kernel.

cocotbext-axi provides the host side: an AXI4-Lite master on ``s_axi_control`` and an AXI RAM
model on ``m_axi_gmem`` holding device memory. Parameters (:func:`sim.runner.bench_params`):

* ``image``: a file with the device memory's initial bytes (from address 0);
* ``weight_port``: the kernel has the weight master ``m_axi_wgt`` (a config's
  ``weight_port_bytes``): a second AXI RAM on the same memory answers it, its read side, and
  with ``weight_writes`` (a config's ``wide_store``) its write side too; with
  ``weight_ports`` = P > 1 the read sides of ``m_axi_wgt1`` .. ``m_axi_wgt<P-1>`` too;
* ``buffers``: ``{name: [addr, size]}`` for each of the kernel's buffer arguments
  (:func:`sw.compiler.isa.buffers`), whose registers are written in that order;
* ``max_cycles``: give up (report ``timed_out``) after this many cycles without ap_done;
* ``stall``: random pauses on every AXI channel (seeded by ``seed``);
* ``mem_delay``: every read side answers each burst this many cycles later than the RAM
  model does (a config's ``mem_read_delay``): its first beat goes out no earlier than that
  many cycles after the RAM would have sent it had the burst found the RAM idle, and the
  side takes up to 64 waiting ARs instead of 2 (a memory controller's request queue);
* ``reset_at``: pulse reset this many cycles into the run, then run again from the start;
* ``prerun``: ``[[addr, hex bytes], ...]``: first run to ap_done on the image with these bytes
  written over it, then write the image back and run again, without a reset (what the kernel
  keeps from one run must not change the next); the report is the second run's;
* ``bus_error``: ``[[lo, hi], ...]``: every read or write of a bus word that meets one of these
  byte ranges is answered with SLVERR (and not written);
* ``trace``: record the kernel's cycle counter each time the command index moves on;
* ``progress``: a file to which the kernel's cycle counter and command index are written
  every ``progress_every`` cycles (default 200,000) while it runs (a host-side thread
  turns them into a progress bar; one timer per interval, no per-cycle callback).

The report holds ``status``, ``command``, ``cycles`` and ``timed_out`` (and with ``trace``,
``trace``: ``[[command index, cycle counter when that command was fetched], ...]``); the final
memory is written to ``image_out``.
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from pathlib import Path

import cocotb
from cocotb.triggers import (
    ClockCycles,
    FallingEdge,
    First,
    ReadOnly,
    RisingEdge,
    Timer,
    ValueChange,
)
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiRamRead, AxiReadBus

from sim.runner import bench_params, bench_report_path
from sim.streams import CLOCK_NS, start_clock
from sw.compiler.isa import REGISTERS

P = bench_params()

# cocotbext-axi 0.1.28 still calls setimmediatevalue(), deprecated in cocotb 2.1; the tests run
# with PYTHONWARNINGS=error, so let that one third-party deprecation through (and only it).
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")


def _pauses(rng: random.Random):
    while True:
        yield rng.random() < 0.3


def _delay_reads(side, clk, cycles: int) -> None:
    """Make a cocotbext-axi RAM read side answer each burst ``cycles`` later: its AR is held
    until ``cycles`` clock edges after the edge that took it (the RAM's own pipeline then
    runs as before; an AR it takes later than that is not held)."""
    from collections import deque

    from cocotb.utils import get_sim_time

    ch, taken = side.ar_channel, deque()
    put, recv, clear = ch.queue.put_nowait, ch.recv, ch.clear

    def put_timed(obj):  # called by the sink in the edge that takes the AR
        taken.append(get_sim_time("ns"))
        put(obj)

    async def recv_delayed():
        ar = await recv()
        wait = taken.popleft() + cycles * CLOCK_NS - get_sim_time("ns")
        if wait > 0:
            await ClockCycles(clk, round(wait / CLOCK_NS))
        return ar

    def clear_timed():  # a reset drops the ARs taken, and their times
        taken.clear()
        clear()

    ch.queue.put_nowait, ch.recv, ch.clear = put_timed, recv_delayed, clear_timed
    # take ARs as they come, as a memory controller with a deep request queue does (the
    # RAM's own limit, 2 waiting ARs, would hold the kernel's next ones while one waits)
    ch.queue_occupancy_limit = 64


def _fail_on(side, ranges) -> None:
    """Make a cocotbext-axi RAM side fail (SLVERR: it catches the exception) on accesses that
    meet ``ranges``."""
    def meets(address, length):
        return any(address < hi and lo < address + length for lo, hi in ranges)

    if hasattr(side, "_read"):
        read = side._read

        async def _read(address, length):
            if meets(address, length):
                raise OSError(f"bus error: read of {length} bytes at {address:#x}")
            return await read(address, length)
        side._read = _read
    if hasattr(side, "_write"):
        write = side._write

        async def _write(address, data):
            if meets(address, len(data)):
                raise OSError(f"bus error: write of {len(data)} bytes at {address:#x}")
            return await write(address, data)
        side._write = _write


async def _reg_write(host: AxiLiteMaster, name: str, value: int) -> None:
    await host.write(REGISTERS[name], int(value).to_bytes(4, "little"))


async def _reg_read(host: AxiLiteMaster, name: str) -> int:
    return int.from_bytes((await host.read(REGISTERS[name], 4)).data, "little")


async def _reset(dut, cycles: int = 4) -> None:
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def _start(host, buffers) -> None:
    for name, (addr, size) in buffers.items():
        await _reg_write(host, f"{name.upper()}_LO", addr & 0xFFFF_FFFF)
        await _reg_write(host, f"{name.upper()}_HI", addr >> 32)
        await _reg_write(host, f"{name.upper()}_SIZE", size)
    await _reg_write(host, "CTRL", 1)


async def _trace(dut, out: list) -> None:
    """Append ``[index, cycles]`` whenever the kernel's command index changes (the kernel's
    own counters: after the first rising edge, then once the edge that changes the index
    has settled; no per-cycle callback, so long runs are not slowed)."""
    await RisingEdge(dut.clk)
    last = int(dut.index.value)
    out.append([last, int(dut.cycles.value)])
    while True:
        await ValueChange(dut.index)
        await ReadOnly()
        index = int(dut.index.value)
        if index != last:
            out.append([index, int(dut.cycles.value)])
            last = index


async def _progress(dut, path: Path, every: int) -> None:
    """Write ``"<cycles> <command index>"`` to ``path`` every ``every`` cycles."""
    while True:
        await Timer(every * CLOCK_NS, unit="ns")
        path.write_text(f"{int(dut.cycles.value)} {int(dut.index.value)}\n")


async def _wait_done(dut, host, max_cycles: int) -> bool:
    """Wait for ap_done; False when ``max_cycles`` pass first. Sleeps until the kernel's busy
    flag falls (no register polling while it runs: the simulation spends its time in the
    kernel and device memory), then confirms ap_done over AXI4-Lite."""
    start = cocotb.utils.get_sim_time("ns")
    while True:
        if (await _reg_read(host, "CTRL")) & 0b10:
            return True
        left = max_cycles - int((cocotb.utils.get_sim_time("ns") - start) // CLOCK_NS)
        if left <= 0:
            return False
        if dut.busy.value:
            await First(FallingEdge(dut.busy), Timer(left * CLOCK_NS, unit="ns"))
        await ClockCycles(dut.clk, 2)


@cocotb.test()
async def run_program(dut):
    image = Path(P["image"]).read_bytes()
    buffers = {k: tuple(v) for k, v in P["buffers"].items()}
    await start_clock(dut)
    dut.rst.value = 1
    dut._discover_all()  # cocotb 2 lists a handle's children only once discovered; the bus
    # lookups of cocotbext-axi search that list
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_gmem_"), dut.clk, dut.rst, size=len(image))
    ram.write(0, image)
    host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control_"), dut.clk, dut.rst)
    reads, writes = [ram.read_if], [ram.write_if]
    if P.get("weight_port") and P.get("weight_writes"):
        wgt = AxiRam(AxiBus.from_prefix(dut, "m_axi_wgt_"), dut.clk, dut.rst, size=len(image),
                     mem=ram.mem)
        reads.append(wgt.read_if)
        writes.append(wgt.write_if)
    elif P.get("weight_port"):
        reads.append(AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi_wgt_"), dut.clk, dut.rst,
                                mem=ram.mem))
    for p in range(1, int(P.get("weight_ports", 1))):
        reads.append(AxiRamRead(AxiReadBus.from_prefix(dut, f"m_axi_wgt{p}_"), dut.clk,
                                dut.rst, mem=ram.mem))
    for side in (host.write_if, host.read_if, *reads, *writes):
        side.log.setLevel(logging.WARNING)  # one INFO line per burst slows long runs
    if P.get("mem_delay"):
        for side in reads:
            _delay_reads(side, dut.clk, int(P["mem_delay"]))
    if P.get("bus_error"):
        for side in (*reads, *writes):
            _fail_on(side, [tuple(r) for r in P["bus_error"]])
    if P.get("stall"):
        rng = random.Random(int(P.get("seed", 1)))
        channels = []
        for side in writes:
            channels += [side.aw_channel, side.w_channel, side.b_channel]
        for side in reads:
            channels += [side.ar_channel, side.r_channel]
        for ch in channels:
            ch.set_pause_generator(_pauses(random.Random(rng.random())))
    await _reset(dut)
    assert (await _reg_read(host, "CTRL")) & 0b100, "the kernel is not idle after reset"
    trace: list = []
    if P.get("reset_at"):
        await _start(host, buffers)
        await ClockCycles(dut.clk, int(P["reset_at"]))
        await _reset(dut)
        assert (await _reg_read(host, "CTRL")) & 0b100, "not idle after a mid-run reset"
    if P.get("prerun"):
        for addr, data in P["prerun"]:
            ram.write(int(addr), bytes.fromhex(data))
        await _start(host, buffers)
        assert await _wait_done(dut, host, int(P.get("max_cycles", 10_000_000))), \
            "the first run did not finish"
        ram.write(0, image)
    if P.get("trace"):
        cocotb.start_soon(_trace(dut, trace))
    if P.get("progress"):
        cocotb.start_soon(_progress(dut, Path(P["progress"]),
                                    int(P.get("progress_every", 200_000))))
    await _start(host, buffers)
    done = await _wait_done(dut, host, int(P.get("max_cycles", 10_000_000)))
    report = {"timed_out": not done}
    if done:
        report.update(status=await _reg_read(host, "STATUS"),
                      command=await _reg_read(host, "COMMAND"),
                      cycles=await _reg_read(host, "CYCLES"))
        if P.get("trace"):
            report["trace"] = trace
        assert not (await _reg_read(host, "CTRL")) & 0b10, "ap_done did not clear on read"
    Path(P["image_out"]).write_bytes(ram.read(0, len(image)))
    path = bench_report_path()
    if path is not None:
        path.write_text(json.dumps(report))
