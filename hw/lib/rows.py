"""Reading rows back from a ring, their records taken from a FIFO (the row units' stages)."""

from __future__ import annotations

from amaranth import Signal, Value

__all__ = ["row_reader"]


def row_reader(m, q, layout, *, nb_max: int, nb_of, adv: Value | int = 1, name: str):
    """Issue the beats of the rows whose records leave the FIFO ``q`` (``layout``), one a cycle
    while ``adv``, back to back: the next record is taken in the cycle that issues the row's
    last beat (or as soon as there is one, when idle).

    ``nb_of(rec)`` gives a record's beat count (1..``nb_max``). Returns ``(rec, beat, issue,
    last)``: the current record, the beat issued when ``issue`` is high, and whether it is the
    row's last."""
    rec = Signal(layout, name=f"{name}_rec")
    have = Signal(name=f"{name}_have")
    beat = Signal(range(nb_max + 1), name=f"{name}_beat")
    last = Signal(name=f"{name}_last")
    issue = Signal(name=f"{name}_issue")
    m.d.comb += [last.eq(beat + 1 == nb_of(rec)), issue.eq(have & adv),
                 q.r_en.eq(~have | (adv & last))]
    with m.If(q.r_rdy & q.r_en):
        m.d.sync += [rec.eq(q.r_data), have.eq(1), beat.eq(0)]
    with m.Elif(issue & last):
        m.d.sync += have.eq(0)
    with m.Elif(issue):
        m.d.sync += beat.eq(beat + 1)
    return rec, beat, issue, last
