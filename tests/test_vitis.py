"""The generated Vitis packaging matches the RTL's ports and the register map."""

import re
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET

import pytest

from bitstreams.vitis import KERNEL_NAME, _ports, kernel_xml, package_tcl, write_package
from hw.config import preset
from sw.compiler.isa import BUFFERS, REGISTERS
from sw.driver.xrt import KERNEL_ARGS, kernel_args


def two_port_config():
    return preset("tiny").replace(spm_kib=4, max_k=64, max_row=16, pe_rows=16,
                                  weight_port_bytes=8, weight_ports=2)


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


def test_two_weight_ports_put_params1_on_its_own_master():
    cfg = two_port_config()
    assert cfg.weight_ports == 2 and cfg.port_rows == 8
    kernel = ET.fromstring(kernel_xml(cfg)).find("kernel")
    ports = {p.get("name"): p for p in kernel.iter("port")}
    assert set(ports) == {"s_axi_control", "m_axi_gmem", "m_axi_wgt", "m_axi_wgt1"}
    assert ports["m_axi_wgt1"].get("mode") == "master"
    assert ports["m_axi_wgt1"].get("dataWidth") == ports["m_axi_wgt"].get("dataWidth") == "64"
    args = list(kernel.find("args"))
    assert [a.get("name") for a in args] == list(kernel_args(cfg))
    assert [int(a.get("id")) for a in args] == list(range(len(args)))
    by_name = {a.get("name"): a for a in args}
    assert int(by_name["params1"].get("offset"), 16) == REGISTERS["PARAMS1_LO"]
    assert by_name["params1"].get("port") == "m_axi_wgt1"
    assert by_name["params1"].get("addressQualifier") == "1"
    assert int(by_name["params1_size"].get("offset"), 16) == REGISTERS["PARAMS1_SIZE"]
    assert by_name["params1_size"].get("port") == "s_axi_control"
    for b in BUFFERS:
        assert by_name[b].get("port") == "m_axi_gmem"
    tcl = package_tcl(cfg)
    for m in ("m_axi_gmem", "m_axi_wgt", "m_axi_wgt1"):
        assert f"-busif {m} -clock ap_clk" in tcl
    assert "m_axi_wgt2" not in tcl


def test_two_weight_ports_appear_in_the_wrapper(tmp_path):
    # needs the hardware's m_axi_wgt1 master (hw/top/accelerator.py)
    out = write_package(two_port_config(), tmp_path)
    text = (out / "nmaccel.v").read_text()
    widths = {name: w for _, name, w in _ports(text)}
    assert widths["m_axi_wgt1__rdata"] == widths["m_axi_wgt__rdata"] == 64
    assert ".m_axi_wgt1__araddr(m_axi_wgt1_araddr)" in text
    # the masters of the wrapper are exactly the kernel.xml's
    masters = {m for n in widths for m in re.findall(r"^(m_axi_\w+?)__", n)}
    xml_ports = {p.get("name") for p in ET.parse(out / "kernel.xml").getroot().iter("port")}
    assert masters == xml_ports - {"s_axi_control"}
    if shutil.which("iverilog"):
        subprocess.run(["iverilog", "-g2012", "-s", KERNEL_NAME, "-o", str(out / "a.out"),
                        str(out / "nmaccel.v")], check=True)


def test_kernel_args_follow_the_buffers_in_register_order():
    assert kernel_args(preset("tiny")) == KERNEL_ARGS
    cfg = preset("u200")
    assert cfg.weight_ports == 3
    assert kernel_args(cfg) == KERNEL_ARGS + ("params1", "params1_size", "params2",
                                              "params2_size")
    assert kernel_args(two_port_config())[-2:] == ("params1", "params1_size")


def test_xrt_allocates_each_buffer_in_its_arguments_bank(monkeypatch, tmp_path):
    """With a stand-in for pyxrt: a buffer goes to the group of the argument it is named for,
    and the kernel gets every buffer of the config in order."""
    from sw.driver.xrt import XrtDevice

    calls = []

    class Kernel:
        def __init__(self, dev, uuid, name):
            assert name == KERNEL_NAME

        def group_id(self, i):
            return 100 + i

        def __call__(self, *args):
            calls.append(args)
            return "run"

    class Bo:
        normal = 0
        _next = 0x1000

        def __init__(self, dev, size, flags, group):
            self.group, self.addr = group, Bo._next
            Bo._next += 0x10000

        def address(self):
            return self.addr

    class Device:
        def __init__(self, index):
            pass

        def load_xclbin(self, path):
            return "uuid"

    monkeypatch.setitem(sys.modules, "pyxrt",
                        types.SimpleNamespace(device=Device, kernel=Kernel, bo=Bo))
    xclbin = tmp_path / "k.xclbin"
    xclbin.write_bytes(b"")
    cfg = two_port_config()
    dev = XrtDevice(cfg, xclbin=str(xclbin))
    bufs = {b: dev.allocate(64, b) for b in ("program", "params", "input", "output", "params1")}
    args = kernel_args(cfg)
    for b, buf in bufs.items():
        assert dev._bos[buf].group == 100 + args.index(b)
    assert dev._bos[dev.allocate(64)].group == 100
    dev.run(**bufs)
    (passed,) = calls
    assert passed[::2] == tuple(dev._bos[bufs[b]] for b in args[::2])
    assert passed[1::2] == (64,) * 5
    # a weight bank allocated without its name would land in bank 0: refused before the run
    unnamed = dict(bufs, params1=dev.allocate(64))
    with pytest.raises(ValueError, match="'params1' buffer must be allocated with name"):
        dev.run(**unnamed)
    assert len(calls) == 1
