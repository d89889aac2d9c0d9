"""`splitdbg attach :1234` / `splitdbg replay FILE` / `splitdbg open IMAGE`: the view of a split kernel.

The app renders Snapshots (splitdbg.target.snapshot) and nothing else: a worker thread polls the
source (live target, recording or memory image) and posts each snapshot as a message; widgets
update from it.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque

from rich.markup import escape as esc
from rich.text import Text
from textual.css.query import NoMatches
from textual import on, work
from textual.worker import get_current_worker
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Sparkline, Static, TabbedContent, TabPane

from ..errors import SplitdbgError
from ..target.following import LossTracker
from ..target.snapshot import EventRec, Snapshot, slat_names
from ..target.splitkernel import ACTIONS, EVENT_KINDS, REGIONS

SIZE = {0x1000: "4K", 0x200000: "2M", 0x40000000: "1G"}
HELP = """[b]splitdbg[/b]: containers, R/NR transitions and permission-violation VM exits

[b]Keys[/b]
  1 2 3 4     containers / container map / events / frame sharing (kernel text and rodata)
  w           walk tool: a process and an address in, the two-dimensional walk out
  z           stop / continue the guest (gdb attaches / detaches)
  b           run until a CPU enters the root-mode handler (breakpoint on sk_svm_handle_exit)
  enter       open the selected container's map, or an event's detail
  /           filter (events: pid=N, kind=K, or a kind, action, region, agree, differs; map: r w x u
              -r -w -x -u differs isolated protected START-END); an unknown word is refused (the
              valid ones listed), the filter shown stays
  p           pause / resume the event log;  f: follow the newest event
  !           problems: what the guest's memory held that cannot be right (the header's "N problems"),
              and the events lost between two polls (the header's "lost N events")
  s           save the screen as SVG;  e: export the events as JSON lines
  ?           this help;  q: quit

Nothing here writes guest memory. The guest keeps running while it is watched (shared RAM file).
On a memory image (`splitdbg open`) everything is read once from the image; z and b are off.
"""


class SnapshotArrived(Message):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        super().__init__()


class TargetLost(Message):
    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__()


# Kinds of event a reader must not miss: a refused attack, a fatal error of the handler. Their rows
# stand out from every other (a denied access is bold red).
ALARM_KINDS = ("attack", "fatal")
ALARM_STYLE = "bold white on red"

# The words of the event log's filter, besides pid=N and kind=K: the module's own names.
KIND_WORDS = tuple(EVENT_KINDS.values())
ACTION_WORDS = tuple(ACTIONS.values())
REGION_WORDS = tuple(r for r in REGIONS.values() if r not in ACTION_WORDS)    # "none" is an action too
VERDICT_WORDS = ("agree", "differs")
EVENT_WORDS = KIND_WORDS + ACTION_WORDS + REGION_WORDS + VERDICT_WORDS


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")


class ProblemsScreen(ModalScreen):
    """Snapshot.problems (what the decoders found that cannot be right), and the events this reader
    lost between two polls, each ring's count so far. Refreshed with each snapshot while open."""

    BINDINGS = [Binding("escape,q,exclamation_mark", "app.pop_screen", "close")]

    def __init__(self, problems: list[str], losses: list[str]) -> None:
        super().__init__()
        self.problems, self.losses = problems, losses

    def compose(self) -> ComposeResult:
        yield VerticalScroll(Static(self.text(), id="problems-text"), id="problems")

    def show(self, problems: list[str], losses: list[str]) -> None:
        self.problems, self.losses = problems, losses
        self.query_one("#problems-text", Static).update(self.text())

    def text(self) -> Text:
        # Text, not markup: a problem names guest data, which may look like markup.
        t = Text()
        n = len(self.problems)
        t.append(f"{n} problem{'s' if n != 1 else ''} in the guest's data (the latest snapshot)\n", "bold")
        t.append("  what was read but cannot be right: it is left out, the rest is shown\n" if n else
                 "  every structure read was as it should be\n")
        for p in self.problems:
            t.append(f"  {p}\n", "red")
        t.append("\nevents lost between two polls (overwritten before they were read)\n", "bold")
        if not self.losses:
            t.append("  none\n")
        for line in self.losses:
            t.append(f"  {line}\n", "bold red")
        t.append("\nescape closes")
        return t


class EventDetail(ModalScreen):
    """Decoded exit information, symbolized RIP with disassembly, the walk, the model's verdict."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "close")]

    def __init__(self, ev: EventRec, names: dict[str, str] | None = None) -> None:
        super().__init__()
        self.ev = ev
        self.names = names or slat_names("NPT")

    def compose(self) -> ComposeResult:
        e, d, n = self.ev, self.ev.detail or {}, self.names
        # The verdict first: it is what a reader opens the detail for. Dynamic text is escaped:
        # symbols such as "sk_write [sktest]" look like markup.
        lines = [f"[b]refused:[/b] {esc(e.what)}" if e.what else
                 f"[b]model's verdict:[/b] {esc(e.check or d.get('verdict') or 'no check (not a violation)')}",
                 f"[b]{e.kind} on CPU {e.cpu}, seq {e.seq}[/b]: container {e.container}, pid {e.pid}, "
                 f"action [b]{e.action}[/b], region {e.region}",
                 f"{n['exit']} {e.exit_code:#x}   {n['info1']} {e.exitinfo1:#x}   {n['info2']} {e.exitinfo2:#x}"
                 + (f"   guest-linear {e.guest_linear:#x}" if e.guest_linear else ""),
                 f"guest CR3 {e.cr3:#x}   {n['root']} {e.slat_root:#x}"]
        if e.check_basis:
            lines.insert(1, "judged on the second-level walk the handler recorded at the exit"
                         if e.check_basis == "at exit" else
                         "judged on today's tables (the module recorded no walk): later changes may show")
        if e.slat_walk:
            lines.append(f"{n['walk']} at the exit (top level first): "
                         + " -> ".join(f"{x:#x}" for x in e.slat_walk if x))
        if e.delivery:
            lines.append(f"{n['intinfo']}: the exit interrupted the delivery of {esc(e.delivery)}")
        if d.get("decoded"):
            lines.append(f"{n['info1']}: " + ", ".join(k for k, v in d["decoded"].items() if v is True))
        if d.get("walk_outcome"):
            lines.append(esc(d["walk_outcome"]))
        if d.get("walk"):
            lines.append(f"[b]{n['walk']} of the faulting guest-physical address[/b]")
            for s in d["walk"]:
                f = s["fields"]
                flags = " ".join(k for k, v in f.items() if v is True and k != "leaf") + (" leaf" if f.get("leaf") else "")
                lines.append(f"  L{s['level']} @ {s['entry_addr']:#014x} = {s['entry']:#018x}  {flags}")
        lines.append(f"RIP {e.rip:#x}  {esc(d.get('symbol') or '(no symbol)')}")
        lines += [f"  {esc(l)}" for l in d.get("disassembly", [])]
        yield VerticalScroll(Static("\n".join(lines), id="detail-text"), id="detail")


class WalkTool(ModalScreen):
    """A process and an address in, the two-dimensional walk and its outcome out (live targets)."""

    BINDINGS = [Binding("escape", "app.pop_screen", "close")]

    def __init__(self, walker) -> None:
        super().__init__()
        self.walker = walker     # callable(pid, gva, access) -> dict (splitdbg.target.walk)

    def compose(self) -> ComposeResult:
        with Vertical(id="walk"):
            yield Static("walk: PID GVA [read|write|fetch], then enter   (escape closes)")
            yield Input(placeholder="e.g. 123 ffffffff81000000 write", id="walk-input")
            yield VerticalScroll(Static("", id="walk-out"))

    def on_mount(self) -> None:
        self.query_one("#walk-input", Input).focus()

    @on(Input.Submitted, "#walk-input")
    def go(self, event: Input.Submitted) -> None:
        from ..cli import render

        out = self.query_one("#walk-out", Static)
        try:
            words = event.value.split()
            pid, gva = int(words[0]), int(words[1], 16)
            access = words[2] if len(words) > 2 else "read"
            out.update(esc(render.walk(self.walker(pid, gva, access))))
        except (IndexError, ValueError):
            out.update("give PID GVA (hex) and optionally read, write or fetch")
        except SplitdbgError as exc:
            out.update(esc(str(exc)))


class SplitdbgApp(App):
    CSS_PATH = "splitdbg.tcss"
    TITLE = "splitdbg"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),   # not textual's "press ctrl+q" hint
        Binding("question_mark", "help", "help"),
        Binding("exclamation_mark", "problems", "problems"),    # early: the footer at 80 columns shows it
        Binding("1", "tab('containers')", "containers"),
        Binding("2", "tab('map')", "map"),
        Binding("3", "tab('events')", "events"),
        Binding("4", "tab('sharing')", "sharing"),
        Binding("w", "walk", "walk"),
        Binding("z", "stop_continue", "stop/continue"),
        Binding("b", "break_handler", "break in R"),
        Binding("slash", "filter", "filter"),
        Binding("p", "pause", "pause"),
        Binding("f", "follow", "follow"),
        Binding("s", "svg", "save SVG"),
        Binding("e", "export", "export events"),
    ]

    retry_after = 2.0                     # seconds between tries of a lost target
    paused = reactive(False)
    guest_state = reactive("running")
    selected_container = reactive(0)

    def __init__(self, source, interval: float = 0.5, polls: int | None = None) -> None:
        super().__init__()
        self.source, self.interval, self.polls = source, interval, polls
        # Set when the app ends (q, Ctrl-C, any exit): the poller and guest control stop waiting at
        # once. A thread worker cannot be interrupted, and asyncio.run waits for it at exit: a poller
        # that slept on, or looped forever, kept `q` from ever returning.
        self.stopping = threading.Event()
        self.snap: Snapshot | None = None
        self.rates: deque[float] = deque([0.0] * 60, maxlen=60)
        self._last_exits: tuple[float, int] | None = None
        self.event_filter = ""
        self.map_filter = ""
        self.events_shown: list[EventRec] = []
        self.lost: str | None = None
        self.lost_first: str | None = None
        self.lost_since: float | None = None
        self.losses: list[str] = []          # every loss of the target seen, for the record
        self.event_losses = LossTracker()    # events the rings wrote and lost between two polls
        self.first_full_screen: float | None = None
        self.started = time.monotonic()
        self.offline = getattr(source, "offline", False)   # a memory image: no guest behind it
        if self.offline:
            self.guest_state = "image"

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            yield Static("connecting...", id="status")
            yield Sparkline(list(self.rates), id="rate")
        with TabbedContent(id="tabs", initial="containers"):
            with TabPane("Containers", id="containers"):
                yield DataTable(id="containers-table", cursor_type="row")
            with TabPane("Map", id="map"):
                with Vertical():
                    yield Static("", id="strip")
                    yield DataTable(id="ranges-table", cursor_type="row")
            with TabPane("Events", id="events"):
                with Vertical():
                    yield Static("", id="event-losses")
                    yield DataTable(id="events-table", cursor_type="row")
            with TabPane("Sharing", id="sharing"):
                yield DataTable(id="sharing-table", cursor_type="row")
        yield Input(placeholder="filter", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.label_columns("NPT")
        self.query_one("#ranges-table", DataTable).add_columns("", "guest-physical", "host-physical", "perm", "size", "note")
        self.query_one("#sharing-table", DataTable).add_columns(
            "region", "frame", "containers", "aliases", "writable", "guest-virtual addresses")
        self.query_one("#filter", Input).display = False
        self.query_one("#event-losses", Static).display = False
        self.query_one("#rate", Sparkline).display = not self.offline   # no rate in an image
        self.query_one("#containers-table", DataTable).focus()   # keys go to the app, not the hidden filter
        self.poller()

    # -- data ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True)
    def poller(self) -> None:
        worker = get_current_worker()

        def done() -> bool:
            return self.stopping.is_set() or worker.is_cancelled

        n = 0
        while (self.polls is None or n < self.polls) and not done():
            try:
                snap = self.source.poll()
                if done():
                    return
                self.post_message(SnapshotArrived(snap))
                if self.offline:
                    return               # an image never changes: one snapshot is all there is
            except SplitdbgError as exc:
                self.post_message(TargetLost(str(exc)))
                self.stopping.wait(self.retry_after)     # then try again: the target may come back
            except OSError as exc:
                self.post_message(TargetLost(f"{type(exc).__name__}: {exc}"))
                self.stopping.wait(self.retry_after)
            n += 1
            self.stopping.wait(self.interval)            # returns at once when the app ends

    def exit(self, *args, **kwargs) -> None:
        self.stopping.set()
        super().exit(*args, **kwargs)

    def on_target_lost(self, msg: TargetLost) -> None:
        why = msg.why.removeprefix("target lost: ")
        if self.lost is None:
            self.lost_since = time.time()
            self.lost_first = why              # the cause; later tries say only why they failed
            self.lost = why
        elif why != self.lost_first:
            self.lost = f"{self.lost_first}; retrying: {why}"
        self.losses.append(why)
        self.guest_state = "lost"
        self.render_status()

    def label_columns(self, slat: str) -> None:
        """Column titles in the manual's words for this second-level format (NPT or EPT)."""
        n = slat_names(slat)
        self.columns_for = slat
        for table, cols in (("#containers-table", ("id", "owner", "comm", n["root"], "pgds", "exits", n["violation"],
                                                    "deny", "iso", "log", "prot", "policy")),
                            ("#events-table", ("cpu", "seq", "cont", "pid", "kind", "action", "region", n["info1"],
                                               n["info2"], "RIP", "check"))):
            t = self.query_one(table, DataTable)
            t.clear(columns=True)
            t.add_columns(*cols)

    def on_snapshot_arrived(self, msg: SnapshotArrived) -> None:
        try:
            rate = self.screen_stack[0].query_one("#rate", Sparkline)
        except (NoMatches, IndexError):
            return          # the main screen is gone (the app is closing): a late poll shows nothing
        self.lost = None
        self.snap = s = msg.snap
        if not self.offline and getattr(self.source, "control", None) is None and hasattr(self.source, "run_state"):
            # As QEMU says it (query-status), not assumed: a guest paused over QMP shows paused.
            st = self.source.run_state
            self.guest_state = {None: "state unknown", "debug": "stopped", "prelaunch": "not started"}.get(st, st)
        if s.slat != self.columns_for:
            self.label_columns(s.slat)
            self._newest = None
        if s.module and not self.offline:
            now, exits = s.taken, s.module["total_exits"]
            if self._last_exits and now > self._last_exits[0]:
                self.rates.append(max(0.0, (exits - self._last_exits[1]) / (now - self._last_exits[0])))
            self._last_exits = (now, exits)
        rate.data = list(self.rates)
        if self.event_losses.update(s):
            self.render_losses()
        self.render_status()
        if isinstance(self.screen, ProblemsScreen):
            self.screen.show(s.problems, self.event_losses.lines())
        self.render_containers()
        self.render_map()
        if s.sharing or not any(c.ranges for c in s.containers):
            self.render_sharing()
        newest = (len(s.events), s.events[-1].cpu, s.events[-1].seq) if s.events else (0,)
        if not self.paused and newest != getattr(self, "_newest", None):
            self._newest = newest            # the event table is rebuilt only when there is news
            self.render_events()
        if self.first_full_screen is None:
            self.first_full_screen = time.monotonic() - self.started

    # -- rendering -----------------------------------------------------------------------------
    def alarms(self) -> Text:
        """What the screens cannot show as it is, said in the header (empty when nothing is): the
        events lost between two polls, so far, and the problems of the latest snapshot (`!` lists both)."""
        out, s, n = Text(), self.snap, self.event_losses.total
        if n:
            out.append(f"  lost {n} event{'s' if n != 1 else ''}", "bold red")
        if s is not None and s.problems:
            k = len(s.problems)
            out.append(f"  {k} problem{'s' if k != 1 else ''}", "bold red")
        if out:
            out.append(" (!)", "red")
        return out

    def render_status(self) -> None:
        s = self.snap
        if self.lost:
            txt = Text(f"target lost: {self.lost} (retrying)", style="bold red")
            self.last_lost_text = txt.plain
            if s is not None:
                # What the screens below show is the last state seen, not the guest's now.
                txt.append(f"  - not live: the screens show its last state, from "
                           f"{time.strftime('%H:%M:%S', time.localtime(s.taken))}", "red")
                txt.append_text(self.alarms())
        elif s is None:
            txt = Text("connecting...")
        elif s.module is None:
            # The alarms early: a narrow terminal cuts the end of the header off.
            txt = Text(s.target, style="yellow").append_text(self.alarms())
            txt.append(f"  split-kernel module not loaded  ({'; '.join(s.notes)})", style="yellow")
            if self.offline:
                txt.append(f"  OFFLINE {getattr(self.source, 'info', 'image')}", "bold cyan")
        elif self.offline:
            # What it is first: a narrow terminal wraps the rest, never this.
            m = s.module
            txt = Text.assemble((f"OFFLINE {getattr(self.source, 'info', 'image')}", "bold cyan"),
                                (f"  {s.target}", "bold"), self.alarms(), f"  {m['vendor_name']}/{s.slat}  CPUs {s.cpus}  ",
                                f"{len(s.containers) - 1} containers  exits {m['total_exits']} (total)  ",
                                (f"overwritten {m.get('ring_overflow', 0)}", ""))
        else:
            m = s.module
            txt = Text.assemble((f"{s.target}", "bold"), self.alarms(), f"  {m['vendor_name']}/{s.slat}  CPUs {s.cpus}  ",
                                (f"{len(s.containers) - 1} containers  ", ""),
                                f"exits {m['total_exits']}  ({self.rates[-1]:.0f}/s)  ",
                                (f"overwritten {m.get('ring_overflow', 0)}  ", ""),
                                ("PAUSED" if self.paused else "live", "bold yellow" if self.paused else "green"),
                                (f"  guest {self.guest_state}", "bold magenta" if self.guest_state != "running" else ""))
        self.query_one("#status", Static).update(txt)

    def render_containers(self) -> None:
        t = self.query_one("#containers-table", DataTable)
        row = t.cursor_row
        t.clear()
        for c in self.snap.containers:
            k = c.counters
            pol = "-" if c.id == 0 else ",".join(f"{r[0]}={p}" for r, p in c.policy.items())
            t.add_row(str(c.id), str(c.owner_pid), c.owner_comm or ("root" if c.id == 0 else ""), f"{c.slat_root:#x}",
                      str(len(c.pgds)), str(k["exits"]), str(k["exits_npf"]), str(k["denied"]), str(k["isolated"]),
                      str(k["allowed"]), str(len(c.protected)), pol + (" (released)" if c.released else ""),
                      key=str(c.id))
        if row is not None and row < t.row_count:
            t.move_cursor(row=row)

    def render_map(self) -> None:
        s, t = self.snap, self.query_one("#ranges-table", DataTable)
        c = s.container(self.selected_container) or s.container(0)
        t.clear()
        if c is None:
            return
        flt = {f for f in self.map_filter.replace(",", " ").split() if f}
        from ..cli.render import _match

        for r in c.ranges:
            if flt and not _match(r, flt):
                continue
            t.add_row("*" if r.differs_from_root else "", f"{r.start:#x}-{r.end:#x}", f"{r.hpa:#x}", r.perms,
                      SIZE.get(r.page_size, hex(r.page_size)), r.note)
        self.query_one("#strip", Static).update(self.strip(c))

    def strip(self, c) -> Text:
        """One cell per 8 MiB of the first GiBs of guest-physical memory: how this container maps it
        compared with the root container (green same, yellow differs, red absent, cyan isolated)."""
        if not c.ranges:
            return Text("(no ranges)")
        top = min(max(r.end for r in c.ranges if r.page_size < 1 << 30) if any(r.page_size < 1 << 30 for r in c.ranges)
                  else 1 << 30, 1 << 32)
        cells, step = 64, max(top // 64, 1 << 12)
        out = Text(f"container {c.id} {self.snap.slat} 0..{top:#x}: ")
        for i in range(cells):
            lo, hi = i * step, (i + 1) * step
            rs = [r for r in c.ranges if r.start < hi and r.end > lo]
            if not rs:
                out.append("·", "red")
            elif any(r.note.startswith("isolated") for r in rs):
                out.append("█", "cyan")
            elif any(r.differs_from_root for r in rs):
                out.append("█", "yellow")
            else:
                out.append("█", "green")
        return out

    def render_sharing(self) -> None:
        """Kernel text/rodata frames: which containers reach them, through how many guest-virtual
        aliases, and whether any path writes them (red)."""
        t = self.query_one("#sharing-table", DataTable)
        if self.snap.sharing == getattr(self, "_sharing_shown", None):
            return     # re-read only every few polls: re-adding ~800 rows each poll cost most of the TUI's CPU
        self._sharing_shown = self.snap.sharing
        t.clear()
        for r in self.snap.sharing:
            style = "bold red" if r["writable"] else ""
            t.add_row(r["region"], f"{r['frame']:#x}", ",".join(map(str, r["containers"])), str(r["aliases"]),
                      Text("yes" if r["writable"] else "no", style=style),
                      " ".join(f"{v:#x}" for v in r["gvas"][:3]) + (" ..." if len(r["gvas"]) > 3 else ""))

    def render_events(self) -> None:
        t = self.query_one("#events-table", DataTable)
        evs = [e for e in self.snap.events if self._event_matches(e)]
        self.events_shown = evs[-500:]
        at_end = t.cursor_row is None or t.cursor_row >= t.row_count - 1
        t.clear()
        for i, e in enumerate(self.events_shown):
            if e.kind in ALARM_KINDS:        # the whole row: an attack is seen at a glance
                t.add_row(*(Text(v, style=ALARM_STYLE) for v in (
                    str(e.cpu), str(e.seq), str(e.container), str(e.pid), e.kind, e.action, e.region,
                    f"{e.exitinfo1:#x}", f"{e.exitinfo2:#x}", f"{e.rip:#x}", e.what or e.check)), key=str(i))
                continue
            style = "bold red" if e.action == "deny" else "cyan" if e.action == "isolate" else ""
            t.add_row(str(e.cpu), str(e.seq), str(e.container), str(e.pid), Text(e.kind, style=style),
                      Text(e.action, style=style), e.region, f"{e.exitinfo1:#x}", f"{e.exitinfo2:#x}", f"{e.rip:#x}",
                      e.check, key=str(i))
        if at_end and t.row_count:
            t.move_cursor(row=t.row_count - 1)
            t.scroll_end(animate=False)     # the newest event in view, even if the cursor was there already

    def render_losses(self) -> None:
        """Each ring's events lost so far, above the event log (hidden while none are)."""
        lines = self.event_losses.lines()
        w = self.query_one("#event-losses", Static)
        w.display = bool(lines)
        w.update(Text("; ".join(lines) + " (between two polls: overwritten before they were read)", style="bold red")
                 if lines else "")

    def _event_matches(self, e: EventRec) -> bool:
        """Every word must hold (check_event_filter has made sure each means something)."""
        for word in self.event_filter.split():
            if word.startswith("pid="):
                ok = str(e.pid) == word[4:]
            elif word.startswith("kind=") or word in KIND_WORDS:
                ok = e.kind == word.removeprefix("kind=")
            elif word in ACTION_WORDS:
                ok = e.action == word
            elif word in REGION_WORDS:
                ok = e.region == word
            elif word in VERDICT_WORDS:
                ok = e.check.startswith(word)
            else:
                ok = False
            if not ok:
                return False
        return True

    # -- actions -------------------------------------------------------------------------------
    def action_walk(self) -> None:
        walker = getattr(self.source, "walk", None)
        if walker is None:
            self.notify("the walk tool needs a live target (not a recording)", severity="warning")
            return
        self.push_screen(WalkTool(walker))

    def action_stop_continue(self) -> None:
        self._control("resume" if self.guest_state != "running" else "stop")

    def action_break_handler(self) -> None:
        self._control("break_at_handler")

    @work(thread=True, exclusive=False, group="control")
    def _control(self, what: str) -> None:
        if self.offline:
            self.call_from_thread(self.notify, "this is a memory image: there is no guest to stop, continue or break "
                                  "into (z, b); `splitdbg attach :PORT` controls a live one", severity="warning")
            return
        fn = getattr(self.source, what, None)
        if fn is None:
            self.call_from_thread(self.notify, "control needs a live target", severity="warning")
            return
        try:
            state = fn(cancelled=self.stopping.is_set) if what == "break_at_handler" else fn()
        except SplitdbgError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self._set_state, state)

    def _set_state(self, state: str) -> None:
        # The header gets the short form; the notification the whole sentence.
        self.guest_state = ("in R handler" if "root-mode handler" in state else
                            "stopped" if state.startswith(("stopped", "no VM exit")) else state)
        self.notify(state, timeout=10)
        if self.snap:
            self.render_status()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_problems(self) -> None:
        if isinstance(self.screen, ProblemsScreen):
            return
        self.push_screen(ProblemsScreen(self.snap.problems if self.snap else [], self.event_losses.lines()))

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        table = self.query_one({"map": "#ranges-table", "events": "#events-table", "sharing": "#sharing-table"}
                               .get(tab, "#containers-table"), DataTable)
        table.focus()
        # A table filled while its tab was hidden could not scroll to its cursor (the newest event):
        # once shown, bring the cursor into view. (An image's tables are filled only once.)
        # move_cursor to the row it is on already does not scroll, and a table just shown has no
        # scroll range until its first layout: scroll once it has one.
        self.set_timer(0.05, lambda: self._cursor_into_view(table))

    def _cursor_into_view(self, table: DataTable, tries: int = 20) -> None:
        if not table.row_count:
            return
        if table.max_scroll_y == 0 and table.row_count > table.size.height and tries:
            self.set_timer(0.05, lambda: self._cursor_into_view(table, tries - 1))
            return
        if table.cursor_row >= table.row_count - 1:
            table.scroll_end(animate=False)
        else:
            table.scroll_to_region(table._get_row_region(table.cursor_row), animate=False) \
                if hasattr(table, "_get_row_region") else table.move_cursor(row=table.cursor_row)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        tab = self.query_one("#tabs", TabbedContent).active
        box.value = self.map_filter if tab == "map" else self.event_filter
        box.focus()

    EVENT_KINDS = KIND_WORDS        # the module's kinds of event (splitkernel.EVENT_KINDS)

    def check_event_filter(self, text: str) -> None:
        """pid=N must name a number and kind=K a kind of event; any other word must be a kind, an
        action, a region or a verdict: an unknown one is refused with the valid ones, never
        matched as text (it used to match nothing, or everything, without a word)."""
        for word in text.split():
            if word.startswith("pid="):
                if not word[4:].isdigit():
                    raise SplitdbgError(f"filter {word!r}: pid= takes a process id (a number)")
            elif word.startswith("kind="):
                if word[5:] not in KIND_WORDS:
                    raise SplitdbgError(f"filter {word!r}: kind= takes one of {', '.join(KIND_WORDS)}")
            elif word not in EVENT_WORDS:
                raise SplitdbgError(
                    f"filter {word!r}: unknown word; valid: pid=N, kind=K, a kind ({', '.join(KIND_WORDS)}), an action "
                    f"({', '.join(ACTION_WORDS)}), a region ({', '.join(REGION_WORDS)}) or a verdict "
                    f"({', '.join(VERDICT_WORDS)})")

    @on(Input.Submitted, "#filter")
    def apply_filter(self, event: Input.Submitted) -> None:
        # A filter that cannot mean anything is said so, and the one shown stays: an unknown word
        # used to be ignored, so that the map showed everything under a filter that looked applied.
        from ..cli.render import parse_filter

        try:
            if self.query_one("#tabs", TabbedContent).active == "map":
                parse_filter(event.value, "filter")
                self.map_filter = event.value
                self.render_map() if self.snap else None
            else:
                self.check_event_filter(event.value)
                self.event_filter = event.value
                self.render_events() if self.snap else None
                if self.snap and event.value.strip() and not self.events_shown:
                    self.notify(f"no event matches {event.value!r}", severity="warning")
        except SplitdbgError as exc:
            self.notify(str(exc), severity="error", timeout=10)
        event.input.display = False
        active = self.query_one("#tabs", TabbedContent).active
        self.query_one({"map": "#ranges-table", "events": "#events-table"}.get(active, "#containers-table")).focus()

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.snap:
            self.render_status()

    def action_follow(self) -> None:
        self.paused = False
        t = self.query_one("#events-table", DataTable)
        if t.row_count:
            t.move_cursor(row=t.row_count - 1)

    def action_svg(self) -> None:
        self._save(f"splitdbg-screen-{time.strftime('%Y-%m-%dT%H_%M_%S')}.svg", self.export_screenshot(), "screen saved")

    def action_export(self) -> None:
        data = "".join(json.dumps(e.__dict__) + "\n" for e in self.events_shown)
        self._save(f"splitdbg-events-{int(time.time())}.jsonl", data, f"{len(self.events_shown)} events written")

    def _save(self, path: str, data: str, what: str) -> None:
        """Whole or not at all, and never over an existing file (splitdbg/fileio): a full disk or a
        name already taken is a notice, the old file stays."""
        from ..fileio import atomic_write

        try:
            atomic_write(path, data)
        except SplitdbgError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.notify(f"{what} to {path}")

    @on(DataTable.RowSelected, "#containers-table")
    def open_container(self, event: DataTable.RowSelected) -> None:
        self.selected_container = int(event.row_key.value)
        self.render_map()
        self.action_tab("map")

    @on(DataTable.RowSelected, "#events-table")
    def open_event(self, event: DataTable.RowSelected) -> None:
        self.push_screen(EventDetail(self.events_shown[int(event.row_key.value)], self.snap.names if self.snap else None))

    def on_unmount(self) -> None:
        self.stopping.set()
        self.source.close()
