"""The FaceSwap Cam daemon: capture, coordination, processing and output (layers 1-3)."""
