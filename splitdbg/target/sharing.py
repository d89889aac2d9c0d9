"""Which containers map a frame, and through which guest-virtual addresses: the frame/mapping
graph (networkx) behind `splitdbg check`'s no-aliases rule and the TUI's sharing view.

Nodes: ("gva", container, pgd, gva page), ("gpa", container, gpa page), ("frame", hpa page).
Edges carry `writable`: the guest page tables' permission (gva -> gpa) and the container's
nested table's (gpa -> frame)."""
from __future__ import annotations

import bisect

import networkx as nx
import numpy as np

from ..arch import x86_paging as xp
from ..errors import SplitdbgError


# Bounds on corrupt tables: a real address space decodes some 50,000 entries (memoised) and the
# kernel text and rodata of every container's address spaces make some 100,000 mappings.
MAX_DUMP_ENTRIES = 500_000
MAX_MAPPINGS = 500_000
MAX_GRAPH_MAPPINGS = 200_000      # networkx: some 2 KB a mapping


class TooManyMappings(SplitdbgError):
    pass


def mappings(mem, containers, lo: int, hi: int, mode: xp.PagingMode, dumps: dict | None = None,
             problems: list[str] | None = None, limit: int = MAX_MAPPINGS):
    """(container, pgd, gva, gpa, frame, gva_writable, nested_writable) for every page of the given
    containers' address spaces that reaches a frame in [lo, hi). `dumps` (pgd -> ranges) lets
    several calls share one read of each address space. Page tables that cannot be read whole add
    a line to `problems`; more than `limit` mappings (tables aliased past any real address space)
    raise TooManyMappings."""
    dumps = {} if dumps is None else dumps
    memo: dict = {}       # the kernel half is the same tables in every address space: decode once
    count = 0
    for c in containers:
        nested = sorted((nr.start, nr.end, nr.hpa, "w" in nr.perms) for nr in c.ranges)
        nstarts = [n[0] for n in nested]
        for pgd in c.pgds:
            if pgd not in dumps:
                try:
                    d = xp.dump(mem, pgd, mode, on_error="collect", memo=memo, max_entries=MAX_DUMP_ENTRIES)
                    dumps[pgd] = d.ranges
                    if d.problems and problems is not None:
                        problems.append(f"page tables of address space {pgd:#x} (container {c.id}): "
                                        f"{len(d.problems)} problem{'s' if len(d.problems) > 1 else ''}, first "
                                        f"{d.problems[0]}: the rest of it is read")
                except SplitdbgError as exc:
                    dumps[pgd] = []
                    if problems is not None:
                        problems.append(f"page tables of address space {pgd:#x} (container {c.id}): {exc}")
            ranges = dumps[pgd]
            if ("phys", pgd) not in dumps:      # where each range lands, to pick those over [lo, hi) at once
                dumps[("phys", pgd)] = (np.fromiter((r.phys for r in ranges), np.uint64, len(ranges)),
                                        np.fromiter((r.phys + r.size for r in ranges), np.uint64, len(ranges)))
            phys, ends = dumps[("phys", pgd)]
            for i in np.flatnonzero((phys < np.uint64(hi)) & (ends > np.uint64(lo))).tolist():
                gr = ranges[i]
                a, b = max(gr.phys, lo), min(gr.phys + gr.size, hi)
                # the nested ranges over [a, b), found by bisection (not every range of the container)
                k = max(bisect.bisect_right(nstarts, a) - 1, 0)
                while k < len(nested) and nested[k][0] < b:
                    ns, ne, hpa, nested_w = nested[k]
                    k += 1
                    s0, e0 = max(a, ns), min(b, ne)
                    if s0 >= e0:
                        continue
                    for page in range(s0 & ~0xFFF, e0, 0x1000):
                        frame = hpa + (page - ns)
                        if lo <= frame < hi:     # not, e.g., an isolated private copy
                            count += 1
                            if count > limit:
                                raise TooManyMappings(
                                    f"more than {limit} mappings reach {lo:#x}-{hi:#x}: page tables "
                                    f"aliased past any real address space (corrupt)")
                            yield c.id, pgd, gr.start + (page - gr.phys), page, frame, gr.writable, nested_w


def sharing_graph(mem, containers, lo: int, hi: int, mode: xp.PagingMode, dumps: dict | None = None) -> nx.DiGraph:
    """Mappings that reach frames in [lo, hi), over the address spaces of the given containers."""
    return graph_of(mappings(mem, containers, lo, hi, mode, dumps, limit=MAX_GRAPH_MAPPINGS))


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
