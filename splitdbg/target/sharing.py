"""Which containers map a frame, and through which guest-virtual addresses: the frame/mapping
graph (networkx) behind `splitdbg check`'s no-aliases rule and the TUI's sharing view.

Nodes: ("gva", container, pgd, gva page), ("gpa", container, gpa page), ("frame", hpa page).
Edges carry `writable`: the guest page tables' permission (gva -> gpa) and the container's
nested table's (gpa -> frame)."""
from __future__ import annotations

import networkx as nx

from ..arch import x86_paging as xp
from ..errors import SplitdbgError


def sharing_graph(mem, containers, lo: int, hi: int, mode: xp.PagingMode) -> nx.DiGraph:
    """Mappings that reach frames in [lo, hi), over the address spaces of the given containers."""
    g = nx.DiGraph()
    for c in containers:
        for pgd in c.pgds:
            try:
                d = xp.dump(mem, pgd, mode, on_error="collect")
            except SplitdbgError:
                continue
            for gr in d.ranges:
                a, b = max(gr.phys, lo), min(gr.phys + gr.size, hi)
                if a >= b:
                    continue
                for nr in c.ranges:
                    s0, e0 = max(a, nr.start), min(b, nr.end)
                    for page in range(s0 & ~0xFFF, e0, 0x1000):
                        frame = nr.hpa + (page - nr.start)
                        if not (lo <= frame < hi):
                            continue   # e.g. an isolated private copy: not one of these frames
                        gva = gr.start + (page - gr.phys)
                        g.add_edge(("gva", c.id, pgd, gva), ("gpa", c.id, page), writable=gr.writable)
                        g.add_edge(("gpa", c.id, page), ("frame", frame), writable="w" in nr.perms)
    return g


def writable_paths(g: nx.DiGraph):
    """(container, pgd, gva, gpa, frame) for every path that writes the frame."""
    for node in g:
        if node[0] != "gva":
            continue
        for mid in g.successors(node):
            if not g.edges[node, mid]["writable"]:
                continue
            for frame in g.successors(mid):
                if g.edges[mid, frame]["writable"]:
                    yield node[1], node[2], node[3], mid[2], frame[1]


def frame_rows(g: nx.DiGraph, limit: int = 2000) -> list[dict]:
    """One row per frame: the containers that reach it, how many guest-virtual aliases, whether
    any path writes it; frames reached from more than one container or writably first."""
    rows = []
    for node in g:
        if node[0] != "frame":
            continue
        gpas = list(g.predecessors(node))
        gvas = [v for m in gpas for v in g.predecessors(m)]
        writable = any(g.edges[v, m]["writable"] and g.edges[m, node]["writable"] for m in gpas for v in g.predecessors(m))
        rows.append({"frame": node[1], "containers": sorted({m[1] for m in gpas}), "aliases": len(gvas),
                     "gvas": sorted({v[3] for v in gvas})[:8], "writable": writable})
    rows.sort(key=lambda r: (not r["writable"], -len(r["containers"]), -r["aliases"], r["frame"]))
    return rows[:limit]
