"""``python -m faceswap_cam.daemon.ops.service``: the Windows logon tasks' launcher."""

import sys

from faceswap_cam.daemon.ops.service.launcher import launch_logged

if __name__ == "__main__":
    sys.exit(launch_logged(sys.argv[1:]))
