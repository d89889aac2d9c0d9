"""/proc's state letters from task_struct.__state and .exit_state (fs/proc/array.c, 6.1)."""
from splitdbg.target.tasks import state_letter


def test_state_letters_as_proc_prints_them():
    cases = {(0x0, 0): "R", (0x1, 0): "S", (0x2, 0): "D", (0x4, 0): "T", (0x8, 0): "t",
             (0x402, 0): "I",            # TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
             (0x40, 0): "P",             # TASK_PARKED
             (0x80, 0x20): "Z",          # TASK_DEAD with EXIT_ZOMBIE
             (0x80, 0x10): "X",          # EXIT_DEAD
             (0x1000, 0): "D",           # TASK_RTLOCK_WAIT reads as uninterruptible
             (0x101, 0): "S",            # TASK_WAKEKILL is not reported
             (0x102, 0): "D"}            # TASK_KILLABLE
    assert {k: state_letter(*k) for k in cases} == cases
