"""Bulk imports: CSV uploads streamed through COPY by workers on the imports queue."""
