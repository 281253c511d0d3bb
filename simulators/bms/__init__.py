"""Simulated BMS devices: pure request -> reply functions that speak the real protocols by
reusing the drivers' codecs (``jbd_device``, ``daly_device``). A serial or pty endpoint feeds
them bytes and a PackSnapshot; they hold no I/O and no clock."""
