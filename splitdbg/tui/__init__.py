"""The Textual TUI: `splitdbg attach TARGET` (live) and `splitdbg replay FILE` (a recording)."""
