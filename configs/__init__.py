"""The shipped configuration files, installed as the package ``daq._configs``.

This folder stays at the top of the repository (bench files, register maps, limit sets, profiles,
Grafana files, deployment units); ``setup.py`` maps it into the wheel as ``daq._configs`` so an
installed ``daq`` finds every file here through ``importlib.resources`` (see ``daq/resources.py``
and docs/adr/0007-shipped-configs-as-package-data.md). Any file added under this folder is shipped.
"""
