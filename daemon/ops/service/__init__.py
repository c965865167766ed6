"""Start FaceSwap Cam at login: ``faceswap-cam service install|uninstall|status|logs``.

One login service per platform, all running the interpreter this command runs under (a venv's
``bin/python`` is used as is, never resolved: the link is what makes it the venv):

- Linux: a systemd *user* unit for the daemon (``$XDG_CONFIG_HOME/systemd/user/``) and an XDG
  autostart entry for the tray (``$XDG_CONFIG_HOME/autostart/``). No root.
- macOS: two LaunchAgents (``~/Library/LaunchAgents/``), logs in ``~/Library/Logs/FaceSwapCam/``.
- Windows: two per-user logon tasks registered with ``schtasks /Create /XML``; a Startup-folder
  ``.cmd`` stands in when Task Scheduler refuses.

The file generators are pure functions of their arguments. ``install``/``uninstall``/``status``/
``logs`` take the platform, the home folder and the environment as parameters, and every command
that talks to the OS service manager goes through one injectable :data:`common.Runner`, so all
of it is tested in a temporary home on any OS.

Files are written atomically and only when their content changes, so a second ``install``
reports ``unchanged``. ``install`` records the folders it had to create in a small manifest, so
``uninstall`` removes exactly what ``install`` added, those folders included, and nothing else.
When the service manager cannot be reached (no user systemd bus, an SSH session on a Mac),
``install`` still writes the files, says exactly what to run later, and succeeds.

The pieces: ``common`` (commands, files, the manifest, results), one backend per platform
(``linux``, ``macos``, ``windows``), ``lifecycle`` (install, uninstall, status, logs), ``cli`` (the
``service`` subcommand) and ``launcher`` (what the Windows tasks run).
"""

from faceswap_cam.daemon.ops.service.cli import add_service_parser, run_service
from faceswap_cam.daemon.ops.service.common import Outcome, ServiceError, Status
from faceswap_cam.daemon.ops.service.lifecycle import install, is_installed, logs, status, uninstall

__all__ = [
    "Outcome",
    "ServiceError",
    "Status",
    "add_service_parser",
    "install",
    "is_installed",
    "logs",
    "run_service",
    "status",
    "uninstall",
]
