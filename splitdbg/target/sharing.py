"""Which containers map a frame, and through which guest-virtual addresses: the frame/mapping
graph (networkx) behind `splitdbg check`'s no-aliases rule and the TUI's sharing view.

Nodes: ("gva", container, pgd, gva page), ("gpa", container, gpa page), ("frame", hpa page).
Edges carry `writable`: the guest page tables' permission (gva -> gpa) and the container's
nested table's (gpa -> frame)."""
from __future__ import annotations

import networkx as nx

from ..arch import x86_paging as xp
from ..errors import SplitdbgError


def mappings(mem, containers, lo: int, hi: int, mode: xp.PagingMode, dumps: dict | None = None):
    """(container, pgd, gva, gpa, frame, gva_writable, nested_writable) for every page of the given
    containers' address spaces that reaches a frame in [lo, hi). `dumps` (pgd -> ranges) lets
    several calls share one read of each address space."""
    dumps = {} if dumps is None else dumps
    memo: dict = {}       # the kernel half is the same tables in every address space: decode once
    for c in containers:
        for pgd in c.pgds:
            if pgd not in dumps:
                try:
                    dumps[pgd] = xp.dump(mem, pgd, mode, on_error="collect", memo=memo).ranges
                except SplitdbgError:
                    dumps[pgd] = []
            for gr in dumps[pgd]:
                a, b = max(gr.phys, lo), min(gr.phys + gr.size, hi)
                if a >= b:
                    continue
                for nr in c.ranges:
                    s0, e0 = max(a, nr.start), min(b, nr.end)
                    nested_w = "w" in nr.perms
                    for page in range(s0 & ~0xFFF, e0, 0x1000):
                        frame = nr.hpa + (page - nr.start)
                        if lo <= frame < hi:     # not, e.g., an isolated private copy
                            yield c.id, pgd, gr.start + (page - gr.phys), page, frame, gr.writable, nested_w


def sharing_graph(mem, containers, lo: int, hi: int, mode: xp.PagingMode, dumps: dict | None = None) -> nx.DiGraph:
    """Mappings that reach frames in [lo, hi), over the address spaces of the given containers."""
    return graph_of(mappings(mem, containers, lo, hi, mode, dumps))


def graph_of(maps) -> nx.DiGraph:
    edges = []
    for cid, pgd, gva, gpa, frame, gw, nw in maps:
        edges.append((("gva", cid, pgd, gva), ("gpa", cid, gpa), {"writable": gw}))
        edges.append((("gpa", cid, gpa), ("frame", frame), {"writable": nw}))
    g = nx.DiGraph()
    g.add_edges_from(edges)
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
    return _ranked(rows, limit)


def frame_rows_of(maps, limit: int = 2000) -> list[dict]:
    """frame_rows straight from `mappings`, without building the graph: what a snapshot needs,
    several times faster (no networkx node and edge dictionaries for some 100,000 mappings)."""
    frames: dict[int, list] = {}       # frame -> [containers, gva nodes, gvas, writable]
    for cid, pgd, gva, gpa, frame, gw, nw in maps:
        f = frames.get(frame)
        if f is None:
            f = frames[frame] = [set(), set(), set(), False]
        f[0].add(cid)
        f[1].add((cid, pgd, gva, gpa))
        f[2].add(gva)
        f[3] = f[3] or (gw and nw)
    rows = [{"frame": frame, "containers": sorted(c), "aliases": len(nodes), "gvas": sorted(gvas)[:8],
             "writable": w} for frame, (c, nodes, gvas, w) in frames.items()]
    return _ranked(rows, limit)


def _ranked(rows: list[dict], limit: int) -> list[dict]:
    rows.sort(key=lambda r: (not r["writable"], -len(r["containers"]), -r["aliases"], r["frame"]))
    return rows[:limit]
