"""sim.runner's lean netlist: the same modules and ports without always @* blocks or unread
names; signals marked keep stay."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.spmm.pe import ProcessingElement
from sim.runner import emit_verilog


class _Kept(wiring.Component):
    """A counter nothing outside reads, one with ``keep``, and a port."""

    def __init__(self):
        super().__init__({"o": Out(8), "i": In(8)})

    def elaborate(self, platform):
        m = Module()
        kept = Signal(8, attrs={"keep": 1})
        dropped = Signal(8)
        m.d.sync += [kept.eq(kept + self.i), dropped.eq(dropped + 1)]
        m.d.comb += self.o.eq(self.i + 1)
        return m


def _ports(verilog: str) -> set[str]:
    """The names in the first module's port list."""
    head = verilog.split("\nmodule ", 1)[1].split(");", 1)[0]
    return {p.strip() for p in head.split("(", 1)[1].split(",")}


def test_the_lean_netlist_has_the_same_modules_and_ports_and_no_always_star(tmp_path):
    text = emit_verilog(ProcessingElement(m=8), "pe", tmp_path / "pe.v", lean=True).read_text()
    full = emit_verilog(ProcessingElement(m=8), "pe", tmp_path / "pe_full.v").read_text()
    assert full.count("\nmodule ") == text.count("\nmodule ") == 2  # the PE and its IndexMux
    assert "always @*" in full and "always @*" not in text
    assert _ports(text) == _ports(full) >= {"weight", "sel", "acts", "total", "clk", "rst"}


def test_the_lean_netlist_keeps_signals_marked_keep_and_drops_unread_ones(tmp_path):
    text = emit_verilog(_Kept(), "kept", tmp_path / "kept.v", lean=True).read_text()
    assert "reg [7:0] kept" in text
    assert "dropped" not in text


def test_a_keyed_conversion_is_kept_on_disk_for_the_next_process(tmp_path, monkeypatch,
                                                                 capsys):
    """With a cache key, the next process (here: the memory cache emptied) reads the Verilog
    back instead of elaborating again; another key, other options or other RTL sources
    convert anew."""
    import sim.runner as runner

    built = []

    def build():
        built.append(1)
        return ProcessingElement(m=8)

    path = tmp_path / "pe.v"
    first = emit_verilog(build, "pe", path, cache_key="pe m8", lean=True).read_text()
    assert built == [1] and "generating Verilog (pe;" in capsys.readouterr().err
    runner._VERILOG_CACHE.clear()  # a new process
    assert emit_verilog(build, "pe", path, cache_key="pe m8", lean=True).read_text() == first
    assert built == [1] and capsys.readouterr().err == ""  # read from disk, not converted
    runner._VERILOG_CACHE.clear()
    emit_verilog(build, "pe", path, cache_key="pe m8", lean=False)  # other options
    runner._VERILOG_CACHE.clear()
    emit_verilog(build, "pe", path, cache_key="pe m8 b", lean=True)  # another key
    assert built == [1, 1, 1]
    runner._VERILOG_CACHE.clear()
    monkeypatch.setattr(runner, "_SOURCES", ["other sources"])  # an edit to the RTL
    emit_verilog(build, "pe", path, cache_key="pe m8 b", lean=True)
    assert built == [1, 1, 1, 1]
