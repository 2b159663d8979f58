"""The store's backup and restore (`storage.backup`) and the error the store raises, for the
command line and the pages: the app layer reaches the store through rlhf, never directly."""

from __future__ import annotations

from storage.backup import BackupReport, restore_backup, write_backup
from storage.db import StoreError

__all__ = ["BackupReport", "StoreError", "restore_backup", "write_backup"]
