"""A raw guest-physical memory image on disk (a copy of the RAM file: offline snapshots)."""
from __future__ import annotations

from .shared_file import SharedRamFile


class ImageFile(SharedRamFile):
    """Same q35 layout as QEMU's RAM file, so `cp /dev/shm/splitdbg-* image.raw` is an image."""

    name = "image"

    def describe(self):
        return f"memory image {self.path} ({self.ram_size >> 20} MiB)"
