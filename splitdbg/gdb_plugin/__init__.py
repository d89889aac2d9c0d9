"""gdb_plugin."""
