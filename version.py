"""The app's version: written into every image's metadata ("Version: ...") and manifests."""

__version__ = "0.1.0"
