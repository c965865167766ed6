"""The system-tray client of the daemon's control API (a separate process)."""
