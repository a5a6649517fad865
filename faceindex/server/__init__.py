"""faceindex server: FastAPI app over one data folder, and its web page."""
