"""The generated Vitis packaging matches the RTL's ports and the register map."""

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from bitstreams.vitis import KERNEL_NAME, _ports, write_package
from hw.config import preset
from sw.compiler.isa import BUFFERS, REGISTERS


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_package(preset("tiny").replace(spm_kib=4, max_k=64, max_row=16),
                         tmp_path_factory.mktemp("vitis"))


def test_kernel_xml_names_every_buffer_at_its_register(package):
    root = ET.parse(package / "kernel.xml").getroot()
    kernel = root.find("kernel")
    assert kernel.get("name") == KERNEL_NAME and kernel.get("hwControlProtocol") == "ap_ctrl_hs"
    args = {a.get("name"): a for a in kernel.find("args")}
    for b in BUFFERS:
        assert int(args[b].get("offset"), 16) == REGISTERS[f"{b.upper()}_LO"]
        assert args[b].get("port") == "m_axi_gmem" and args[b].get("addressQualifier") == "1"
        assert int(args[f"{b}_size"].get("offset"), 16) == REGISTERS[f"{b.upper()}_SIZE"]


def test_wrapper_maps_every_port_and_compiles(package):
    text = (package / "nmaccel.v").read_text()
    top_ports = [name for _, name, _ in _ports(text) if name not in ("clk", "rst")]
    assert len(top_ports) > 40
    for name in top_ports:
        assert f".{name}({name.replace('__', '_')})" in text
    assert ".rst(~ap_rst_n)" in text and "input wire ap_clk" in text
    if shutil.which("iverilog"):
        subprocess.run(["iverilog", "-g2012", "-s", KERNEL_NAME, "-o", str(package / "a.out"),
                        str(package / "nmaccel.v")], check=True)
    assert "package_xo" in (package / "package_xo.tcl").read_text()


def test_a_weight_port_appears_in_the_wrapper_the_kernel_xml_and_the_packaging(tmp_path):
    cfg = preset("tiny").replace(spm_kib=4, max_k=64, max_row=16, pe_rows=8,
                                 weight_port_bytes=8)
    out = write_package(cfg, tmp_path)
    ports = {a.get("name"): a for a in ET.parse(out / "kernel.xml").getroot().iter("port")}
    assert ports["m_axi_wgt"].get("dataWidth") == "64"
    assert ports["m_axi_wgt"].get("mode") == "master"
    text = (out / "nmaccel.v").read_text()
    widths = {name: w for _, name, w in _ports(text)}
    assert widths["m_axi_wgt__rdata"] == 64 and widths["m_axi_gmem__rdata"] == 32
    assert ".m_axi_wgt__araddr(m_axi_wgt_araddr)" in text
    assert "-busif m_axi_wgt" in (out / "package_xo.tcl").read_text()
