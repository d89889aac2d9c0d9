"""The snapshot's sharing rows (computed straight from the mappings) against the graph's."""
import random

from splitdbg.target.sharing import frame_rows, frame_rows_of, graph_of


def test_rows_without_the_graph_are_the_graphs_rows():
    rnd = random.Random(7)
    maps, nested = [], {}
    for cid in (1, 2, 3):
        for pgd in (0x1000 * cid, 0x1000 * cid + 0x800000):
            for gva_base in (0xFFFFFFFF81000000, 0xFFFF888001000000):
                for i in range(300):
                    gpa = 0x1000000 + 0x1000 * rnd.randrange(200)
                    # one nested entry per container and gpa: a frame (some private copies), writable or not
                    frame, nw = nested.setdefault((cid, gpa), (gpa if rnd.random() < 0.95 else 0x9000000 + gpa,
                                                               rnd.random() < 0.02))
                    maps.append((cid, pgd, gva_base + 0x1000 * i, gpa, frame, rnd.random() < 0.3, nw))
    # a gva maps one gpa: keep the first mapping of each (container, pgd, gva)
    seen, unique = set(), []
    for m in maps:
        if m[:3] not in seen:
            seen.add(m[:3])
            unique.append(m)
    rows = frame_rows_of(unique, limit=10_000)
    assert rows == frame_rows(graph_of(unique), limit=10_000)
    assert any(r["writable"] for r in rows) and any(len(r["containers"]) == 3 for r in rows)
    assert frame_rows_of(unique, limit=5) == rows[:5]
