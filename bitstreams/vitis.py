"""Vitis RTL-kernel packaging of the Accelerator, generated from an AcceleratorConfig.

``python -m bitstreams.vitis --preset u200 --out DIR`` writes, for users with AMD's tools:

* ``nmaccel.v``: the generated kernel (``hw.top.accelerator.Accelerator``, module ``top``)
  and a wrapper module ``nmaccel`` with the Vitis port names (``ap_clk``, ``ap_rst_n``,
  ``s_axi_control_*``, ``m_axi_gmem_*`` and the weight ports' ``m_axi_wgt*_*``);
* ``kernel.xml``: the kernel's arguments (:func:`sw.compiler.isa.buffers`) with their
  register offsets (:data:`sw.compiler.isa.REGISTERS`), the four buffers on ``m_axi_gmem``
  (and, with a weight port, the ``m_axi_wgt`` master that streams LINEAR weights from
  ``params`` and, on the Alveo presets, moves LOAD's input and STORE's output a beat at a
  time); with ``config.weight_ports = P > 1`` also the weight banks ``params1`` ..
  ``params<P-1>``, each on its own read-only master ``m_axi_wgt1`` .. ``m_axi_wgt<P-1>``;
* ``package_xo.tcl``: packages the Verilog as an IP and then as ``nmaccel.xo``
  (``vivado -mode batch -source package_xo.tcl``), to link with
  ``v++ -l -t hw --platform <platform> nmaccel.xo``;
* ``config.json``: the config the kernel was generated for.

None of this can be run here (no Vivado); the files are generated and checked for
consistency with the RTL's ports and the register map (``tests/test_vitis.py``), not built.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from hw.config import AcceleratorConfig, preset
from sw.compiler.isa import BUFFERS, REGISTERS, WEIGHT_BANKS, buffers

__all__ = ["write_package", "wrapper_verilog", "kernel_xml", "package_tcl", "KERNEL_NAME",
           "weight_masters", "buffer_port"]

KERNEL_NAME = "nmaccel"


def weight_masters(config: AcceleratorConfig) -> tuple[str, ...]:
    """The kernel's weight-port AXI masters: ``m_axi_wgt`` (port 0) and one
    ``m_axi_wgt<p>`` per extra weight port; none without a weight port."""
    if not config.weight_port_bytes:
        return ()
    return ("m_axi_wgt",) + tuple(f"m_axi_wgt{p}" for p in range(1, config.weight_ports))


def buffer_port(name: str) -> str:
    """The master a buffer argument is declared on: ``m_axi_wgt<p>`` for weight bank
    ``params<p>`` (the only master that reads it), ``m_axi_gmem`` for the others."""
    if name in WEIGHT_BANKS:
        return f"m_axi_wgt{WEIGHT_BANKS.index(name) + 1}"
    if name not in BUFFERS:
        raise ValueError(f"{name!r} is no buffer argument")
    return "m_axi_gmem"


def _ports(verilog: str) -> list[tuple[str, str, int]]:
    """``(direction, name, width)`` of module ``top``'s ports."""
    body = verilog[verilog.index("module top("):]
    body = body[: body.index("endmodule")]
    out = []
    for d, width, name in re.findall(r"^\s*(input|output)\s+(\[\d+:0\]\s+)?(\w+);", body, re.M):
        w = int(re.match(r"\[(\d+):0\]", width.strip()).group(1)) + 1 if width else 1
        out.append((d, name, w))
    return out


def wrapper_verilog(top_verilog: str) -> str:
    """Module ``nmaccel``: Vitis names (``x__y`` -> ``x_y``), active-low reset."""
    ports = [p for p in _ports(top_verilog) if p[1] not in ("clk", "rst")]
    decl = ["  input wire ap_clk", "  input wire ap_rst_n"]
    conn = ["    .clk(ap_clk)", "    .rst(~ap_rst_n)"]
    for d, name, w in ports:
        rng = f"[{w - 1}:0] " if w > 1 else ""
        decl.append(f"  {d} wire {rng}{name.replace('__', '_')}")
        conn.append(f"    .{name}({name.replace('__', '_')})")
    return (f"module {KERNEL_NAME} (\n" + ",\n".join(decl) + "\n);\n  top kernel (\n"
            + ",\n".join(conn) + "\n  );\nendmodule\n")


def kernel_xml(config: AcceleratorConfig) -> str:
    """The kernel's ports and arguments (:func:`sw.compiler.isa.buffers`, in register order).
    ``program``, ``params``, ``input`` and ``output`` are on ``m_axi_gmem``; with a weight
    port (``config.weight_port_bytes``) the ``m_axi_wgt`` master reads the LINEAR weights and
    LayerNorm records inside the ``params`` buffer (and, with ``config.wide_fetch``, the
    ``program``'s commands; with ``config.wide_load``, LOAD's ``input``; with
    ``config.wide_store`` it writes STORE's ``output``), so the link must connect both
    masters to the memory bank those buffers live in
    (``v++ --connectivity.sp nmaccel_1.m_axi_gmem:DDR[0]
    --connectivity.sp nmaccel_1.m_axi_wgt:DDR[0]``). With ``config.weight_ports = P > 1``
    each weight bank ``params<p>`` is on its own master ``m_axi_wgt<p>``, the only one that
    reads it, which should get a memory bank of its own so the ports' bandwidth adds up
    (``--connectivity.sp nmaccel_1.m_axi_wgt1:DDR[1]
    --connectivity.sp nmaccel_1.m_axi_wgt2:DDR[2]`` ...; ``HBM[p]`` on an HBM card); the
    host then allocates each bank in its argument's memory bank (:mod:`sw.driver.xrt`)."""
    wgt = "".join(f'\n      <port name="{m}" mode="master" range="0xFFFFFFFFFFFFFFFF" '
                  f'dataWidth="{8 * config.weight_port_bytes}"\n'
                  f'            portType="addressable" base="0x0"/>'
                  for m in weight_masters(config))
    args = []
    for i, b in enumerate(buffers(config)):
        args.append(f'      <arg name="{b}" addressQualifier="1" id="{2 * i}" '
                    f'port="{buffer_port(b)}" '
                    f'size="0x8" offset="{REGISTERS[b.upper() + "_LO"]:#x}" '
                    f'hostOffset="0x0" hostSize="0x8" type="void*"/>')
        args.append(f'      <arg name="{b}_size" addressQualifier="0" id="{2 * i + 1}" '
                    f'port="s_axi_control" size="0x4" '
                    f'offset="{REGISTERS[b.upper() + "_SIZE"]:#x}" hostOffset="0x0" '
                    f'hostSize="0x4" type="uint"/>')
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<root versionMajor="1" versionMinor="6">
  <kernel name="{KERNEL_NAME}" language="ip_c" vlnv="nmaccel:kernel:{KERNEL_NAME}:1.0"
          attributes="" preferredWorkGroupSizeMultiple="0" workGroupSize="1"
          interrupt="false" hwControlProtocol="ap_ctrl_hs">
    <ports>
      <port name="s_axi_control" mode="slave" range="0x1000" dataWidth="32"
            portType="addressable" base="0x0"/>
      <port name="m_axi_gmem" mode="master" range="0xFFFFFFFFFFFFFFFF" dataWidth="32"
            portType="addressable" base="0x0"/>{wgt}
    </ports>
    <args>
{chr(10).join(args)}
    </args>
  </kernel>
</root>
"""


def package_tcl(config: AcceleratorConfig) -> str:
    """The Vivado Tcl that packages ``nmaccel.v`` and ``kernel.xml`` as ``nmaccel.xo``; every
    AXI interface (``s_axi_control``, ``m_axi_gmem`` and the weight masters of
    :func:`weight_masters`) is associated with ``ap_clk``."""
    part = config.part
    wgt = "".join(f"ipx::associate_bus_interfaces -busif {m} -clock ap_clk $core\n"
                  for m in weight_masters(config))
    return f"""# Package nmaccel.v as a Vitis RTL kernel: vivado -mode batch -source package_xo.tcl
set here [file dirname [file normalize [info script]]]
create_project -force kernel_pack $here/kernel_pack -part {part}
add_files -norecurse $here/nmaccel.v
set_property top {KERNEL_NAME} [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir $here/ip -vendor nmaccel -library kernel -taxonomy /KernelIP \\
    -import_files -set_current false
ipx::unload_core $here/ip/component.xml
ipx::edit_ip_in_project -upgrade true -name tmp_edit_project -directory $here/ip \\
    $here/ip/component.xml
set core [ipx::current_core]
ipx::associate_bus_interfaces -busif s_axi_control -clock ap_clk $core
ipx::associate_bus_interfaces -busif m_axi_gmem -clock ap_clk $core
{wgt}set_property sdx_kernel true $core
set_property sdx_kernel_type rtl $core
ipx::update_checksums $core
ipx::save_core $core
close_project -delete
package_xo -force -xo_path $here/{KERNEL_NAME}.xo -kernel_name {KERNEL_NAME} \\
    -ip_directory $here/ip -kernel_xml $here/kernel.xml
"""


def write_package(config: AcceleratorConfig, out: str | Path) -> Path:
    from amaranth.back import verilog

    from hw.top.accelerator import Accelerator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    top = verilog.convert(Accelerator(config=config), name="top")
    (out / "nmaccel.v").write_text(top + "\n" + wrapper_verilog(top))
    (out / "kernel.xml").write_text(kernel_xml(config))
    (out / "package_xo.tcl").write_text(package_tcl(config))
    config.to_json(out / "config.json")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bitstreams.vitis", description=__doc__)
    p.add_argument("--preset", default="u200")
    p.add_argument("--out", help="default: bitstreams/<preset>-vitis")
    args = p.parse_args(argv)
    cfg = preset(args.preset)
    out = write_package(cfg, args.out or Path("bitstreams") / f"{cfg.name}-vitis")
    print(f"wrote {out}/nmaccel.v, kernel.xml, package_xo.tcl, config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
