"""matrix-installer's engine: answers, stages, cloud, SSH, rendering, federation checks. No Textual."""

__version__ = "0.1.0"
